"""docs/reference.md is what the generator makes, so it documents every param and only the params that exist."""

from __future__ import annotations

import re

import pytest

from contrastlab.infra.params import SCHEMA, boolean, int_at_least
from contrastlab.infra.reference import full_names, main, render
from project import ROOT, committed_params_text, write_committed_params

PAGE = ROOT / "docs" / "reference.md"


def generated() -> str:
    return render(committed_params_text(), (ROOT / "dvc.yaml").read_text())


def test_the_committed_page_is_what_the_generator_makes():
    assert PAGE.read_text() == generated(), "docs/reference.md is stale: run `make docs` and commit it"


def test_the_page_documents_exactly_the_keys_of_the_schema():
    documented = set(re.findall(r"^\| `([\w.]+)` \|", PAGE.read_text(), flags=re.M))
    assert sorted(full_names(SCHEMA) - documented) == [], "params without a row in docs/reference.md"
    assert sorted(documented - full_names(SCHEMA)) == [], "rows of docs/reference.md for params that do not exist"


TINY_PARAMS = """\
# the file's header, not a key's meaning
top: 3          # how many
sec:            # a section
  # the width,
  size: 2       # in pixels
  flag: true
"""
TINY_SCHEMA = {None: {"top": int_at_least(1)}, "sec": {"size": int_at_least(1, most=9), "flag": boolean()}}
TINY_DVC = "stages:\n  a:\n    params: [top, sec]\n  b:\n    foreach: [x, y]\n    do:\n      params: [sec.size]\n"


def test_a_row_holds_the_rule_the_default_the_readers_and_the_comments():
    page = render(TINY_PARAMS, TINY_DVC, TINY_SCHEMA, combinations=[])
    assert "| `top` | an integer >= 1 | `3` | `a` | how many |" in page.splitlines()
    assert (
        "| `sec.size` | an integer >= 1 and <= 9 | `2` | `a`, `b@<name>` | the width, in pixels |" in page.splitlines()
    )
    assert "| `sec.flag` | true or false | `true` | `a` |  |" in page.splitlines()
    assert "a section" in page.splitlines() and "header" not in page


def test_a_param_missing_from_the_schema_or_the_file_is_an_error():
    with pytest.raises(ValueError, match="sec.flag"):
        render(TINY_PARAMS.replace("  flag: true\n", ""), TINY_DVC, TINY_SCHEMA, combinations=[])


def test_out_writes_the_page_and_check_fails_in_one_line_once_it_is_stale(tmp_path):
    page = tmp_path / "reference.md"
    files = ["--params", str(write_committed_params(tmp_path)), "--dvc", str(ROOT / "dvc.yaml"), "--out", str(page)]
    main(files)
    main([*files, "--check"])
    page.write_text(page.read_text().replace("`mnist`", "`cifar10`"))
    with pytest.raises(SystemExit, match=r"^[^\n]*reference.md is out of date[^\n]*run `make docs`$"):
        main([*files, "--check"])
