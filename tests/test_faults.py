"""Faults: `dvc repro` killed with SIGKILL in the middle of training, then run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tinydata import make_tiny_repo, sh

pytestmark = pytest.mark.e2e


def test_sigkill_mid_epoch_then_repro_resumes_to_the_uninterrupted_weights_and_same_seed_repeats(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(epochs=40, checkpoint=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("dvc", "repro", "examples", cwd=repo, env=env)
    reference = tmp_path / "reference"
    sh(sys.executable, "stages/train.py", "--data", "data/datasets/mnist", "--examples", "data/examples.npz",
       "--model", str(reference / "encoder.pt"), "--metrics", str(reference / "train.json"),
       "--loss-csv", str(reference / "loss.csv"), "--loss-png", str(reference / "loss.png"),
       "--checkpoint", str(reference / "checkpoint.pt"), cwd=repo, env=env)

    checkpoint = repo / "models" / "train-checkpoint.pt"
    killed = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
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
    sh("dvc", "repro", "--force", cwd=repo, env=env)  # the same seed again, from scratch
    assert {name: json.loads((repo / "metrics" / name).read_text()) for name in first} == first
    assert json.loads((repo / "metrics" / "train.json").read_text())["final_loss"] == first_loss
