"""What every stage script shares: user errors as one line and exit code 2, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from contrastlab.datasets import DataError
from contrastlab.params import ParamError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a bad param or missing data stops it with one clear line, before any output."""
    try:
        main()
    except (ParamError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
