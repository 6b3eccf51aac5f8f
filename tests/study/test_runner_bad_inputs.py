"""The study command's mistakes and interruptions: each is one line (no traceback, no hang), loses no finished run
and leaves nothing half-written. A second study on the same results folder is refused, naming the first; Ctrl-C
stops a study in one line; a study killed with SIGKILL takes its `dvc exp run` and stages with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from contrastlab.infra.errors import FileError, ParamError
from contrastlab.infra.stage import WATCHED_PID, alive
from contrastlab.study.runner import LOCK, fixed_value, keep, plan, results_lock
from project import committed_params
from tinydata import make_tiny_repo

RAW = committed_params()
STUDY = (sys.executable, "-m", "contrastlab.study", "--results", "R")
STOPPED = "stopped: resume with the same command"


def as_in_a_terminal() -> None:
    """SIGINT as a foreground command has it: a test run as a shell's background job would pass on its SIG_IGN."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The single line a refused command printed, checked to be `error: ...` alone, exit 2, no traceback."""
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 2 and len(output.splitlines()) == 1 and output.startswith("error: "), output
    return output


@pytest.fixture
def project(tmp_path) -> Path:
    """A folder with the committed params.yaml and nothing else: a command that got past its checks would fail at
    git, never train."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(RAW))
    return tmp_path


@pytest.mark.parametrize(
    "args, line",
    [
        (["--workers", "-1"], "error: argument --workers: '-1' is not allowed; expected an integer >= 1 (see --help)"),
        (
            ["--seeds", "100000000"],
            "error: argument --seeds: '100000000' is not allowed; expected an integer >= 1 and <= 1000 (see --help)",
        ),
        (
            ["--seeds", "0"],
            "error: argument --seeds: '0' is not allowed; expected an integer >= 1 and <= 1000 (see --help)",
        ),
        (["--threads", "0"], "error: argument --threads: '0' is not allowed; expected an integer >= 1 (see --help)"),
        (["--jobs", "two"], "error: argument --jobs: 'two' is not allowed; expected an integer >= 1 (see --help)"),
        (
            ["--set", "train.lr=[unclosed"],
            "error: argument --set: 'train.lr=[unclosed': the value is not valid YAML "
            "(expected ',' or ']', but got '<stream end>') (see --help)",
        ),
        (["--set", "seed=5"], "error: --set seed=5: a study runs seeds 0..N-1; choose N with --seeds"),
        (
            ["--set", "dataset=cifar10"],
            "error: --set dataset=cifar10: study grid 'main' varies dataset (mnist, cifar10); "
            "choose a grid that does not vary it, or add one",
        ),
        (
            ["--set", "aug=pad_rotate_scale"],
            "error: --set aug=pad_rotate_scale: study grid 'main' varies aug (none, "
            "pad_rotate_scale, simclr); choose a grid that does not vary it, or add one",
        ),
    ],
)
def test_a_bad_option_is_one_line_at_once_and_touches_nothing(project, args, line):
    done = subprocess.run([*STUDY, *args], cwd=project, capture_output=True, text=True, timeout=120)
    assert one_line_error(done) == line
    assert [path.name for path in project.iterdir()] == ["params.yaml"]


def test_params_yaml_that_is_a_folder_is_one_line(tmp_path):
    (tmp_path / "params.yaml").mkdir()
    done = subprocess.run(STUDY, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert one_line_error(done) == f"error: params.yaml: {tmp_path / 'params.yaml'} is a directory, not a file"


def test_a_set_param_may_not_override_the_seed_or_an_axis_of_the_grid():
    with pytest.raises(ParamError, match=r"--set seed=5: a study runs seeds 0..N-1; choose N with --seeds"):
        plan(RAW, seeds=1, fixed={"seed": 5})
    with pytest.raises(ParamError, match=r"--set pairs.negatives=random: study grid 'negatives' varies pairs\.neg"):
        plan(RAW, seeds=1, grid_name="negatives", fixed={"pairs.negatives": "random"})
    runs = plan(RAW, seeds=1, grid_name="losses", fixed={"model.arch": "vgg_small"})  # not an axis of it: fine
    assert all(run.params["model"]["arch"] == "vgg_small" for run in runs)


def test_a_set_value_that_is_not_yaml_is_an_argparse_error():
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=r"'train.lr=\[unclosed': the value is not valid YAML"):
        fixed_value("train.lr=[unclosed")


def test_a_run_whose_files_fail_to_be_written_leaves_no_partial_folder(tmp_path):
    with pytest.raises(TypeError):
        keep(tmp_path / "run", {"probe.json": "{}\n", "study.json": None})
    assert list(tmp_path.iterdir()) == []


def hold_lock(results: Path) -> subprocess.Popen:
    """Another process holding `results`' lock, as a running study does; returned once it holds it."""
    code = (
        "import sys, time; from pathlib import Path; from contrastlab.study.runner import results_lock\n"
        "with results_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(300)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(results)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_second_study_on_the_same_results_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken(project):
    results = project / "R"
    (results / "mnist-triplet-none-s0").mkdir(parents=True)  # a finished run: kept whatever happens
    holder = hold_lock(results)
    try:
        done = subprocess.run(STUDY, cwd=project, capture_output=True, text=True, timeout=120)
        assert one_line_error(done).startswith(
            f"error: {results.name}: another study writes there (pid {holder.pid} on {os.uname().nodename}, started "
        )
        assert done.stderr.strip().endswith("; wait for it to finish or stop it, then run this one again")
        (results / "mnist-triplet-simclr-s0.partial").mkdir()  # as the first study writes a run
    finally:
        holder.kill()  # SIGKILL: its lock file stays, its flock goes with it
        holder.wait()
    assert (results / LOCK).exists()
    with results_lock(results):  # the next study takes the lock and removes what the dead one half-wrote
        assert f"pid {os.getpid()} " in (results / LOCK).read_text()
        assert sorted(path.name for path in results.iterdir()) == [LOCK, "mnist-triplet-none-s0"]
        with (
            pytest.raises(FileError, match=f"another study writes there \\(pid {os.getpid()} "),
            results_lock(results),
        ):
            pass
    assert [path.name for path in results.iterdir()] == ["mnist-triplet-none-s0"]  # no lock file left behind


# A stage of `dvc exp run` (run_stage, so it watches the driver) that trains "forever", its pid in a file
STAGE = (
    "import os, sys, time; from pathlib import Path; from contrastlab.infra.stage import run_stage\n"
    "Path(sys.argv[1]).write_text(str(os.getpid())); run_stage(lambda: time.sleep(600))"
)
# A study driver running it the way the study runs `dvc exp run`
DRIVER = (
    "import sys; from pathlib import Path; from contrastlab.study.runner import run_child\n"
    "try:\n    run_child([sys.executable, '-c', sys.argv[1], sys.argv[2]], Path.cwd())\n"
    "except KeyboardInterrupt:\n    sys.exit(130)"
)


def started_child(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A driver and the pid of the stage it started."""
    pid_file = tmp_path / "child.pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, STAGE, str(pid_file)], cwd=tmp_path, preexec_fn=as_in_a_terminal
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and driver.poll() is None, "the child never started"
        time.sleep(0.1)
    return driver, int(pid_file.read_text())


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.1)
    return True


def test_a_driver_killed_with_sigkill_takes_its_child_with_it(tmp_path):
    driver, child = started_child(tmp_path)
    driver.kill()
    driver.wait()
    assert gone_within(child, 10)


def test_ctrl_c_of_the_driver_reaches_its_child_once_and_waits_for_it(tmp_path):
    driver, child = started_child(tmp_path)  # in a session of its own: the driver's SIGINT is all it gets
    time.sleep(1)  # the stage's watch of the driver and its SIGINT handler in place
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=60) == 130
    assert not alive(child)  # stopped before the driver exited


def processes_of(driver: int) -> list[int]:
    """The processes a study `driver` started, dvc and its stages (they carry its pid to watch)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            pid = int(environ.parent.name)
            if f"{WATCHED_PID}={driver}".encode() in environ.read_bytes().split(b"\0") and alive(pid):
                found.append(pid)
        except OSError:
            pass
    return found


class Study:
    """`python -m contrastlab.study --results R` in `repo`, in a session of its own as a shell runs it (a Ctrl-C goes
    to it alone); its output is gathered line by line."""

    def __init__(self, repo: Path, env: dict):
        self.process = subprocess.Popen(
            STUDY,
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=as_in_a_terminal,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    def wait_for(self, text: str, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline and self.process.poll() is None, "".join(self.lines)
            time.sleep(0.2)

    def output(self) -> str:
        self.reader.join(timeout=60)
        return "".join(self.lines)

    def stop(self) -> None:
        """Whatever happened in the test, nothing of it trains on."""
        for pid in [self.process.pid, *processes_of(self.process.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    repo, env = make_tiny_repo(tmp_path_factory.mktemp("study-stops"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"].update(
        seeds=1, baselines=["raw_pixels"], grids={"main": {"dataset": ["mnist"], "loss": ["triplet"], "aug": ["none"]}}
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo, env


@pytest.mark.e2e
def test_two_studies_on_one_results_folder_the_second_refused_and_ctrl_c_stops_the_first_in_one_line(tiny):
    repo, env = tiny
    first = Study(repo, env)
    try:
        first.wait_for("=== study [1/")
        time.sleep(2)
        second = subprocess.run(STUDY, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert f"another study writes there (pid {first.process.pid} on " in one_line_error(second)
        first.wait_for("Running stage '")  # a stage of `dvc exp run` at work
        time.sleep(2)
        assert first.process.poll() is None  # untouched by the second
        os.killpg(first.process.pid, signal.SIGINT)  # Ctrl-C
        assert first.process.wait(timeout=120) == 130
        output = first.output()
        assert STOPPED in output.splitlines(), output  # a stage stopping at the same time may print its own line after
        assert "contrastlab/study/" not in output  # no traceback of the study's (the stage may print its own)
        assert processes_of(first.process.pid) == []  # dvc and its stage stopped before it
        assert not list((repo / "R").glob("*.partial")) and not (repo / "R" / LOCK).exists()
    finally:
        first.stop()


@pytest.mark.e2e
def test_a_study_killed_with_sigkill_leaves_no_dvc_or_stage_running(tiny):
    repo, env = tiny
    study = Study(repo, env)
    try:
        study.wait_for("Running stage '")
        time.sleep(2)
        children = processes_of(study.process.pid)
        assert children  # dvc exp run, and the stage under it
        study.process.kill()
        study.process.wait()
        assert [pid for pid in children if not gone_within(pid, 30)] == [], study.output()
    finally:
        study.stop()
