"""Two DVC queue workers over four scenarios, all writing to the same local MLflow store at once."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.encoders import load_encoder
from tinydata import GIT, make_tiny_repo, sh

pytestmark = pytest.mark.e2e
SCENARIOS = {
    "q-pairwise-none": ("pairwise", "none"),
    "q-pairwise-simclr": ("pairwise", "simclr"),
    "q-triplet-none": ("triplet", "none"),
    "q-triplet-simclr": ("triplet", "simclr"),
}


def wait_for_queue(repo: Path, env: dict, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo, env=env).stdout
        if not any(state in status for state in ("Queued", "Running")):
            return status
        time.sleep(3)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def test_two_queue_workers_over_four_scenarios_log_four_complete_runs(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    env = {
        **env,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    sh("dvc", "repro", "download", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "data", cwd=repo, env=env)
    for name, (loss, aug) in SCENARIOS.items():
        sh("dvc", "exp", "run", "--queue", "-n", name, "-S", f"loss={loss}", "-S", f"aug={aug}", cwd=repo, env=env)

    sh("dvc", "queue", "start", "-j", "2", cwd=repo, env=env)
    status = wait_for_queue(repo, env)
    assert status.count("Success") == 4, (
        status + sh("dvc", "queue", "logs", "q-triplet-simclr", cwd=repo, env=env, check=False).stdout
    )

    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("SELECT run_uuid, name, status FROM runs").fetchall()
        tags = {(run, key): value for run, key, value in db.execute("SELECT run_uuid, key, value FROM tags")}
        params = {(run, key): value for run, key, value in db.execute("SELECT run_uuid, key, value FROM params")}
        metrics = {(run, key): value for run, key, value in db.execute("SELECT run_uuid, key, value FROM metrics")}
    scenario_runs = [row for row in runs if (row[0], "dvc_experiment") in tags]
    assert sorted(tags[run, "dvc_experiment"] for run, *_ in scenario_runs) == sorted(SCENARIOS)
    # every experiment logs the baselines of mnist, seed 0: the same results, so one run each
    assert sorted(tags[run, "baseline"] for run, *_ in runs if (run, "baseline") in tags) == sorted(BASELINES)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for run, name, state in scenario_runs:
        exp = tags[run, "dvc_experiment"]
        loss, aug = SCENARIOS[exp]
        assert (name, state) == (f"mnist-{loss}-{aug} ({exp})", "FINISHED") and "result_key" in {
            k for r, k in tags if r == run
        }
        assert (params[run, "loss"], params[run, "aug"]) == (loss, aug)
        # the run's numbers and encoder are its own experiment's, not a neighbour's
        ref = exp_ref(repo, env, exp)
        lock = yaml.safe_load(sh("git", "show", f"{ref}:dvc.lock", cwd=repo, env=env).stdout)
        md5 = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/encoder.pt")["md5"]
        trained = load_encoder(repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:], torch.device("cpu")).eval()
        logged = mlflow.pytorch.load_model(f"runs:/{run}/encoder")
        with torch.no_grad():
            assert torch.equal(logged(images), trained(images))
        top1 = json.loads(sh("git", "show", f"{ref}:metrics/probe.json", cwd=repo, env=env).stdout)["top1"]
        assert metrics[run, "probe_top1"] == pytest.approx(top1)


def exp_ref(repo: Path, env: dict, name: str) -> str:
    refs = sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=repo, env=env).stdout.split()
    return next(ref for ref in refs if ref.endswith(f"/{name}"))
