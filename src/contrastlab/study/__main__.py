"""`python -m contrastlab.study`: run a study grid (see `contrastlab.study.runner`)."""

from contrastlab.study.runner import cli

cli()
