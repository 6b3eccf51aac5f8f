"""This checkout as the tests see it: its root and its committed params.

`dvc exp run -S key=value` rewrites the workspace's params.yaml, so no test reads that file: they
read params.yaml as committed (HEAD), and a test that needs other values writes its own copy.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def committed_params_text() -> str:
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True)
    return shown.stdout


def committed_params() -> dict:
    """A fresh copy of the committed params, free to change."""
    return yaml.safe_load(committed_params_text())


def write_committed_params(folder: Path) -> Path:
    path = folder / "params.yaml"
    path.write_text(committed_params_text())
    return path
