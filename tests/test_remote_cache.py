"""Cached re-runs across machines: a pipeline run with its dvc.lock committed and its outputs pushed
to a DVC remote (with the run-cache) is pulled by a fresh clone, whose `dvc repro` then re-executes
nothing. The GitHub workflow relies on the same: the committed dvc.lock plus a restored DVC cache."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from contrastlab.methods.baselines import BASELINES
from tinydata import GIT, make_tiny_repo, sh

pytestmark = pytest.mark.e2e
STAGES = {
    "check",
    "download",
    "examples",
    "train",
    "embed",
    "tsne",
    "probe",
    "track",
    *(f"baseline@{name}" for name in BASELINES),
}
OUTPUTS = ["data/examples.npz", "models/encoder.pt", "data/embeddings.npz", "metrics/probe.json", "plots/tsne.png"]


def digests(repo: Path) -> dict[str, str]:
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in OUTPUTS}


def test_a_fresh_clone_pulls_the_pushed_run_and_recomputes_nothing(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    remote = tmp_path / "dvc-remote"
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=repo, env=env)
    sh("dvc", "repro", cwd=repo, env=env)
    sh("dvc", "push", "--run-cache", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "results", cwd=repo, env=env)
    assert (remote / "runs").is_dir()  # the run-cache went along

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path, env=env)
    clone_env = {**env, "PYTHONPATH": str(clone / "src")}
    sh("dvc", "pull", "--run-cache", cwd=clone, env=clone_env)
    again = sh("dvc", "repro", cwd=clone, env=clone_env)
    assert "Running stage" not in again.stdout, again.stdout
    assert set(re.findall(r"Stage '([\w@-]+)' didn't change, skipping", again.stdout)) == STAGES
    assert digests(clone) == digests(repo)
    assert "up to date" in sh("dvc", "status", cwd=clone, env=clone_env).stdout
