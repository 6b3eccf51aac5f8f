"""Faults: `dvc repro` killed with SIGKILL in the middle of training or of tracking, then run again; an MLflow
store another process holds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from contrastlab.infra.files import one_line
from contrastlab.methods.baselines import BASELINES
from tinydata import make_tiny_repo, sh

pytestmark = pytest.mark.e2e


def test_sigkill_mid_epoch_then_repro_resumes_to_the_uninterrupted_weights_and_same_seed_repeats(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=40, checkpoint=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc", "repro", "examples", cwd=repo, env=env)
    reference = tmp_path / "reference"
    sh(
        sys.executable,
        "stages/train.py",
        "--data",
        "data/datasets/mnist",
        "--examples",
        "data/examples.npz",
        "--model",
        str(reference / "encoder.pt"),
        "--metrics",
        str(reference / "train.json"),
        "--loss-csv",
        str(reference / "loss.csv"),
        "--loss-png",
        str(reference / "loss.png"),
        "--checkpoint",
        str(reference / "checkpoint.pt"),
        cwd=repo,
        env=env,
    )

    checkpoint = repo / "models" / "train-checkpoint.pt"
    killed = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert killed.poll() is None and time.monotonic() < deadline, "training ended before its first checkpoint"
        time.sleep(0.02)
    first = checkpoint.stat().st_mtime_ns
    while checkpoint.stat().st_mtime_ns == first:  # one more epoch done: now it is in the middle of the next
        assert killed.poll() is None and time.monotonic() < deadline, "training ended before its second checkpoint"
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)  # dvc and the stage, as a crash would
    assert killed.wait() == -signal.SIGKILL
    assert not (repo / "models" / "encoder.pt").exists()  # no half result where the result belongs

    resumed = sh("dvc", "repro", cwd=repo, env=env)
    assert "resuming from models/train-checkpoint.pt after epoch" in resumed.stdout
    assert not checkpoint.exists()  # removed once the encoder is saved
    got = torch.load(repo / "models" / "encoder.pt", weights_only=True)["state_dict"]
    want = torch.load(reference / "encoder.pt", weights_only=True)["state_dict"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env).stdout

    first = {name: json.loads((repo / "metrics" / name).read_text()) for name in ("probe.json", "examples.json")}
    first_loss = json.loads((repo / "metrics" / "train.json").read_text())["final_loss"]
    sh("dvc", "repro", "--force", "probe", cwd=repo, env=env)  # the same seed again, from scratch (up to the probe)
    assert {name: json.loads((repo / "metrics" / name).read_text()) for name in first} == first
    assert json.loads((repo / "metrics" / "train.json").read_text())["final_loss"] == first_loss


def active_runs(repo: Path) -> list[tuple[str, str, bool]]:
    """(name, status, tagged complete) of every run the MLflow store shows, read-only, as MLflow writes it."""
    with contextlib.closing(sqlite3.connect(f"file:{repo / 'mlflow.db'}?mode=ro", uri=True)) as db:
        return sorted(
            db.execute(
                "SELECT r.name, r.status, EXISTS (SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid "
                "AND t.key = 'result_key') FROM runs r WHERE r.lifecycle_stage = 'active'"
            ).fetchall()
        )


def complete_runs() -> list[tuple[str, str, bool]]:
    """One complete run per result of the tiny repository: its scenario and each baseline."""
    return sorted(
        [("mnist-triplet-simclr", "FINISHED", True)]
        + [(f"baseline-mnist-{name}-s0", "FINISHED", True) for name in BASELINES]
    )


@pytest.fixture(scope="module")
def killed_in_track(tmp_path_factory) -> tuple[Path, dict, str]:
    """A tiny repository whose first `dvc repro` was killed (SIGKILL, dvc and the stage) while `track` was logging
    its first MLflow run; and the output of the `dvc repro` run after that."""
    repo, env = make_tiny_repo(tmp_path_factory.mktemp("killed-in-track"))
    killed = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while True:
        assert killed.poll() is None and time.monotonic() < deadline, "the pipeline ended before track logged a run"
        with contextlib.suppress(sqlite3.OperationalError):  # no store yet, or MLflow is writing
            if any(status == "RUNNING" for _, status, _ in active_runs(repo)):
                break
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert [(name, status) for name, status, _ in active_runs(repo)] == [("mnist-triplet-simclr", "RUNNING")]
    return repo, env, sh("dvc", "repro", cwd=repo, env=env).stdout


def test_sigkill_while_track_logs_leaves_no_incomplete_run_after_the_next_repro(killed_in_track):
    repo, env, output = killed_in_track
    assert re.findall(r"Running stage '([\w@-]+)'", output) == ["track"]  # every earlier output was kept
    removed = re.findall(r"^MLflow: removed .*$", output, re.MULTILINE)
    assert len(removed) == 1 and re.fullmatch(
        r"MLflow: removed 1 incomplete run left by an interrupted track stage or "
        r"import \(mnist-triplet-simclr [0-9a-f]{32}\)",
        removed[0],
    )
    assert active_runs(repo) == complete_runs()


def test_a_forced_repro_retrains_to_the_same_results_and_adds_no_mlflow_run(killed_in_track):
    """A result's run is keyed without its training time, so retraining it finds the run instead of adding one."""
    repo, env, _ = killed_in_track
    forced = sh("dvc", "repro", "--force", cwd=repo, env=env).stdout
    assert "Running stage 'train'" in forced
    assert len(re.findall(r"^MLflow: already recorded as run ", forced, re.MULTILINE)) == 1 + len(BASELINES)
    assert active_runs(repo) == complete_runs()


def test_track_waits_a_bounded_time_for_a_store_another_process_holds_then_says_who_in_one_line(killed_in_track):
    repo, env, _ = killed_in_track
    db = repo / "mlflow.db"
    outputs = {
        path: path.read_bytes()
        for folder in ("data", "models", "metrics", "plots")
        for path in (repo / folder).rglob("*")
        if path.is_file()
    }
    script = (
        "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(120)"
    )
    holding = subprocess.Popen([sys.executable, "-c", script, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holding.stdout.readline() == "held\n"
        failed = sh(
            "dvc",
            "repro",
            "--force",
            "--single-item",
            "track",
            cwd=repo,
            check=False,
            env={**env, "CONTRASTLAB_MLFLOW_WAIT": "2"},
        )
    finally:
        holding.kill()
        holding.wait()
    who = f"pid {holding.pid} ({one_line(f'{sys.executable} -c {script} {db}', 100)})"
    assert failed.returncode != 0
    assert f"MLflow: mlflow.db is in use by {who}; waiting up to 2 s\n" in failed.stdout
    errors = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: MLflow tracking failed for mnist-triplet-simclr (store sqlite:///{db}): {db} is still "
        f"in use by {who} after 2 s: let it finish or end it (CONTRASTLAB_MLFLOW_WAIT=<seconds> waits "
        "longer). Every DVC output is intact: fix the store or start the server, then run `dvc repro` "
        "again (only `track` re-runs)"
    ]
    assert {path: path.read_bytes() for path in outputs} == outputs
    assert active_runs(repo) == complete_runs()
