"""The stage scripts as DVC runs them: subprocesses in a folder holding params.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.pipeline.datasets import content_digest
from contrastlab.pipeline.probe import fit_settings, probe
from project import ROOT, committed_params, write_committed_params


def stage(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *args], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def write_params(folder: Path, section: str | None, key: str, value) -> None:
    params = committed_params()
    (params[section] if section else params)[key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize(
    "section, key, value, line",
    [
        (None, "aug", "simclar",
         f"error: params.yaml: aug='simclar' is not allowed; expected one of {', '.join(sorted(AUGMENTATIONS))}"),
        ("train", "epochs", -1, "error: params.yaml: train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1 "
         "and <= 10000"),
        ("train", "batch_size", 0, "error: params.yaml: train.batch_size=0 is not allowed; expected an integer >= 1 "
         "and <= 1000000"),
    ],
)
def test_bad_value_stops_train_before_any_work_with_one_line(tmp_path, section, key, value, line):
    write_params(tmp_path, section, key, value)
    result = stage("train", "--data", "missing", "--examples", "missing.npz", "--model", "models/encoder.pt",
                   "--metrics", "metrics/train.json", "--loss-csv", "plots/l.csv", "--loss-png", "plots/l.png",
                   "--checkpoint", "models/ckpt.pt", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_tracking_failure_is_loud_exits_nonzero_and_leaves_outputs_alone(tmp_path):
    write_committed_params(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps({"epochs": 1, "lr": 0.15, "final_loss": 0.5,
                                                     "train_time_s": 1.0, "images_per_s": 10.0}))
    (tmp_path / "probe.json").write_text(json.dumps({"top1": 0.5, "top3": 0.8, "knn": 0.4, "per_class": {"0": 0.5},
                                                     "shifted_top1": {"-3": 0.4}}))
    (tmp_path / "examples.json").write_text(json.dumps({"false_negative_rate": 0.0}))
    (tmp_path / "loss.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "encoder.pt").write_bytes(b"weights")
    (tmp_path / "figure.png").write_bytes(b"png")
    (tmp_path / "data").mkdir()
    images, labels = np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)
    (tmp_path / "data" / "meta.json").write_text(json.dumps(
        {"digests": {"test": {"images": content_digest(images), "labels": content_digest(labels)}}}))
    np.save(tmp_path / "data" / "test_images.npy", images)
    np.save(tmp_path / "data" / "test_labels.npy", labels)
    (tmp_path / "not-a-folder").write_text("")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = stage("track", "--data", "data", "--train-metrics", "train.json", "--probe-metrics", "probe.json",
                   "--examples-metrics", "examples.json", "--loss-csv", "loss.csv", "--encoder", "encoder.pt",
                   "--artifacts", "figure.png", cwd=tmp_path,
                   env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/not-a-folder/mlflow.db", "DVC_ROOT": str(tmp_path)})
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"error: MLflow tracking failed for mnist-triplet-simclr (store sqlite:///{tmp_path}/not-a-folder")
    assert line.endswith("run `dvc repro` again (only `track` re-runs)")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("standardize", [False, True])
def test_probe_stage_passes_probe_standardize_to_the_probe(tmp_path, standardize):
    # ten classes along 8 coordinates a thousand times too small for the probe's fixed penalty
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    embeddings = (rng.normal(size=(1000, 8)) + labels[:, None] * np.linspace(0.2, 0.8, 8)) / 1000
    np.savez(tmp_path / "embeddings.npz", embedding=embeddings, labels=labels)
    write_params(tmp_path, "probe", "standardize", standardize)
    result = stage("probe", "--embeddings", "embeddings.npz", "--metrics", "probe.json", "--confusion-csv",
                   "confusion.csv", "--confusion-png", "confusion.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = probe(embeddings, labels, test_size=0.2, knn_k=30, max_iter=1000, seed=0, standardize=standardize)
    assert json.loads((tmp_path / "probe.json").read_text())["top1"] == round(expected["top1"], 4)


def test_baseline_stage_scores_the_features_with_the_scenarios_probe(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    digests = {}
    for split, n in (("train", 200), ("test", 100)):
        labels = np.repeat(np.arange(10), n // 10).astype(np.uint8)
        images = np.clip(labels[:, None, None] * 25 + rng.normal(0, 5, (n, 28, 28)), 0, 255).astype(np.uint8)
        np.save(data / f"{split}_images.npy", images)
        np.save(data / f"{split}_labels.npy", labels)
        digests[split] = {"images": content_digest(images), "labels": content_digest(labels)}
    (data / "meta.json").write_text(json.dumps({"digests": digests}))
    params = committed_params()
    params["probe"]["knn_k"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("baseline", "--name", "raw_pixels", "--data", "data", "--metrics", "raw.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    test_images = np.load(data / "test_images.npy").reshape(100, -1).astype(np.float32) / 255
    expected = probe(test_images, np.load(data / "test_labels.npy").astype(np.int64), **fit_settings(params["probe"]),
                     seed=0)
    written = json.loads((tmp_path / "raw.json").read_text())
    assert (written["top1"], written["knn"]) == (round(expected["top1"], 4), round(expected["knn"], 4))
    assert list(written["per_class"]) == [str(d) for d in range(10)]
