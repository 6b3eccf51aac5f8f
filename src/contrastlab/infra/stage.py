"""What every stage script shares: a user's mistake or a damaged file is one line and exit code 2; a stage
started for a Dask worker stops when that worker dies."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable

from contrastlab.infra.errors import DataError, FileError, ParamError, TrackingError


# A Dask worker runs `dvc exp run`, which runs the stages; a worker killed with SIGKILL cannot stop them, and
# they would train on (and log to MLflow) beside the run's retry on another worker. So the worker names its
# process id here and each stage watches it.
WATCHED_PID = "CONTRASTLAB_WATCHED_PID"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def stop_when_gone(pid: int, every: float = 1.0) -> None:
    """End this process (exit 1, nothing more written) once process `pid` is gone; checks `every` seconds."""
    def watch() -> None:
        while alive(pid):
            time.sleep(every)
        print(f"error: the process that started this stage ({pid}) is gone; stopping", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a bad param, missing data or an unreadable/unwritable file stops it with one clear
    line (no traceback) and leaves every earlier output as it was."""
    if os.environ.get(WATCHED_PID):
        stop_when_gone(int(os.environ[WATCHED_PID]))
    try:
        main()
    except (ParamError, DataError, FileError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
