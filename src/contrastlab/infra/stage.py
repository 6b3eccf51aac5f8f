"""What every stage script shares: a user's mistake or a damaged file is one line and exit code 2."""

from __future__ import annotations

import sys
from typing import Callable

from contrastlab.infra.errors import DataError, FileError, ParamError, TrackingError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a bad param, missing data or an unreadable/unwritable file stops it with one clear
    line (no traceback) and leaves every earlier output as it was."""
    try:
        main()
    except (ParamError, DataError, FileError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
