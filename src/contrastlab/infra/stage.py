"""What every stage script shares: a user's mistake or a damaged file is one line and exit code 2; a stage
started for a Dask worker stops when that worker dies; the process's allocator keeps freed memory for reuse."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable

import psutil

from contrastlab.infra.errors import DataError, FileError, ParamError, TrackingError

# A Dask worker runs `dvc exp run`, which runs the stages; a worker killed with SIGKILL cannot stop them, and
# they would train on (and log to MLflow) beside the run's retry on another worker. So the worker names its
# process id here and each stage watches it.
WATCHED_PID = "CONTRASTLAB_WATCHED_PID"


def alive(pid: int) -> bool:
    """Whether process `pid` runs: one that ended but is not yet reaped by its parent (a zombie) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError):  # ended (a zombie the system will not describe too); a negative id
        return False
    except psutil.AccessDenied:  # someone else's process, where the system hides its state: alive
        return True


def stop_when_gone(pid: int, every: float = 1.0, grace: float = 30.0) -> None:
    """Stop this process once process `pid` is gone (checked every `every` seconds): KeyboardInterrupt in its main
    thread first, so what it was doing cleans up on the way out (MLflow deletes a half-logged run), and after
    `grace` seconds at once."""

    def watch() -> None:
        while alive(pid):
            time.sleep(every)
        print(f"error: the process that started this stage ({pid}) is gone; stopping", file=sys.stderr, flush=True)
        main = threading.main_thread().ident
        assert main is not None  # None only for a thread not started yet
        signal.pthread_kill(main, signal.SIGINT)  # a real signal: it ends a blocking wait
        time.sleep(grace)
        os._exit(1)

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # inherited: a shell's background job, pytest-xdist's workers
        signal.signal(signal.SIGINT, signal.default_int_handler)  # else the clean-up never starts
    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


# mallopt parameters of glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 32 MB (its limit) in the heap instead of handing them back
    to the OS, for the rest of this process.

    Every training step allocates the same activations again (MNIST's first layer: 30 MB per member
    and batch); memory fresh from the OS costs a page fault per 4 kB, about 8% of a step. Blocks over
    32 MB (CIFAR-10's first layer: 38 MB) still come from the OS. False where the C library is not
    glibc: nothing changes there."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    kept = mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
    trimmed = mallopt(M_TRIM_THRESHOLD, 2**30)
    return bool(kept and trimmed)


def run_stage(
    main: Callable[[], None], stopped: str = "stopped: every earlier output is intact; `dvc repro` resumes"
) -> None:
    """Run a stage; a bad param, missing data or an unreadable/unwritable file stops it with one clear
    line (no traceback) and leaves every earlier output as it was; Ctrl-C prints `stopped` (exit 130).
    The process is the stage's own, so its allocator keeps freed memory for the next same-sized tensors
    (`keep_freed_memory`), which the library's functions leave to their caller."""
    keep_freed_memory()
    if os.environ.get(WATCHED_PID):
        stop_when_gone(int(os.environ[WATCHED_PID]))
    try:
        main()
    except (ParamError, DataError, FileError, TrackingError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: every output is whole (atomic writes), so one line says it, no traceback
        print(stopped, file=sys.stderr)
        sys.exit(130)
