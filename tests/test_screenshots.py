"""docs/screenshots.py's choice of the encoders to log for the Models view (the browser itself: test_mlflow_ui.py)."""

from __future__ import annotations

import subprocess

import yaml

from screenshots import encoder_md5, trained_experiments


def lock(encoder: str | None, *stages: str) -> str:
    train = {"outs": [{"path": "models/encoder.pt", "md5": encoder}]} if encoder else {}
    return yaml.safe_dump(
        {"schema": "2.0", "stages": {**({"train": train} if encoder else {}), **dict.fromkeys(stages, {})}}
    )


def commit(repo, text: str, parent: str | None = None) -> str:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    if parent:
        subprocess.run([*git, "checkout", "-q", parent], cwd=repo, check=True)
    (repo / "dvc.lock").write_text(text)
    subprocess.run([*git, "add", "dvc.lock"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_the_encoder_of_a_dvc_lock_is_its_train_stages_output():
    assert encoder_md5(lock("a" * 32, "probe").encode()) == "a" * 32
    assert encoder_md5(lock(None, "baseline@raw_pixels").encode()) is None


def test_the_experiments_that_trained_an_encoder_of_their_own_are_the_ones_logged(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    base = commit(tmp_path, lock("a" * 32))
    trained = commit(tmp_path, lock("b" * 32), parent=base)
    baseline = commit(tmp_path, lock("a" * 32, "baseline@raw_pixels"), parent=base)  # the workspace's encoder, kept
    for name, sha in (("mnist-ntxent-simclr-s0", trained), ("baseline-mnist-raw_pixels-s0", baseline)):
        subprocess.run(["git", "update-ref", f"refs/exps/ab/{base[2:]}/{name}", sha], cwd=tmp_path, check=True)
    assert trained_experiments(tmp_path) == {"mnist-ntxent-simclr-s0": trained}
