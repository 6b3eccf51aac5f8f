import os
import signal
import subprocess
import sys
import time

import pytest

from contrastlab.infra.stage import WATCHED_PID, alive

WATCHER = """
import sys, time
from contrastlab.infra.stage import stop_when_gone
stop_when_gone(int(sys.argv[1]), every=0.05, grace=float(sys.argv[2]))
try:
    print("watching", flush=True)
    time.sleep(30)
except KeyboardInterrupt:
    print("cleaned up", flush=True)
    if sys.argv[3] == "stuck":
        time.sleep(30)
    raise
"""


def watch(behaviour: str, grace: float, sigint_ignored: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    """The watcher's output and how long it took to stop once its parent was killed (only once it watches: on a
    busy machine Python's start-up alone can take longer than a parent that ends by itself). `sigint_ignored`:
    started as a shell starts a background job, SIGINT ignored."""
    parent = subprocess.Popen(["sleep", "60"])
    args = [sys.executable, "-c", WATCHER, str(parent.pid), str(grace), behaviour]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore
    ) as watcher:
        assert watcher.stdout.readline() == "watching\n"
        parent.kill()
        start = time.monotonic()
        parent.wait()  # reaped here; a zombie counts as gone as well (test_alive_...)
        stdout, stderr = watcher.communicate(timeout=60)
    return subprocess.CompletedProcess(args, watcher.returncode, stdout, stderr), time.monotonic() - start


@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_a_stage_whose_worker_is_gone_cleans_up_and_stops_within_a_second(sigint_ignored):
    done, seconds = watch("cleans", grace=30, sigint_ignored=sigint_ignored)
    assert seconds < 5 and done.returncode != 0 and done.stdout == "cleaned up\n"
    assert done.stderr.startswith("error: the process that started this stage")


def test_a_stage_that_does_not_stop_is_ended_after_the_grace_period():
    done, seconds = watch("stuck", grace=1)
    assert done.returncode == 1 and done.stdout == "cleaned up\n" and seconds < 10


def test_alive_tells_a_running_process_from_an_ended_one_reaped_or_not():
    unreaped = subprocess.Popen(["true"])
    time.sleep(0.5)  # ended, not waited for: a zombie, as a SIGKILLed worker is until its parent reaps it
    assert alive(os.getpid()) and not alive(unreaped.pid)
    assert alive(1) and not alive(-1)  # init: someone else's when not root; a mistyped id is no process
    unreaped.wait()
    assert not alive(unreaped.pid)
    assert WATCHED_PID == "CONTRASTLAB_WATCHED_PID"  # the name the Dask worker sets (contrastlab.study.distributed)


def test_ctrl_c_in_a_stage_is_one_line_and_exit_status_130():
    stage = (
        "import os, signal\nfrom contrastlab.infra.stage import run_stage\n"
        "run_stage(lambda: os.kill(os.getpid(), signal.SIGINT))"
    )
    done = subprocess.run([sys.executable, "-c", stage], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130
    assert done.stderr == "stopped: every earlier output is intact; `dvc repro` resumes\n"
