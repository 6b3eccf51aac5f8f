"""The stage scripts as DVC runs them: subprocesses in a folder holding params.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from contrastlab.infra.files import read_metrics
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.encoders import load_encoder, make_encoder, save_encoder
from contrastlab.pipeline.datasets import content_digest
from contrastlab.pipeline.embed import embed_images
from contrastlab.pipeline.probe import fit_settings, probe
from project import ROOT, committed_params, write_committed_params


def stage(name: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def write_params(folder: Path, section: str | None, key: str, value) -> None:
    params = committed_params()
    (params[section] if section else params)[key] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.mark.parametrize(
    "section, key, value, line",
    [
        (
            None,
            "aug",
            "simclar",
            f"error: params.yaml: aug='simclar' is not allowed; expected one of {', '.join(sorted(AUGMENTATIONS))}",
        ),
        (
            "train",
            "epochs",
            -1,
            "error: params.yaml: train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1 and <= 10000",
        ),
        (
            "train",
            "batch_size",
            0,
            "error: params.yaml: train.batch_size=0 is not allowed; expected an integer >= 1 and <= 1000000",
        ),
    ],
)
def test_bad_value_stops_train_before_any_work_with_one_line(tmp_path, section, key, value, line):
    write_params(tmp_path, section, key, value)
    result = stage(
        "train",
        "--data",
        "missing",
        "--examples",
        "missing.npz",
        "--model",
        "models/encoder.pt",
        "--metrics",
        "metrics/train.json",
        "--loss-csv",
        "plots/l.csv",
        "--loss-png",
        "plots/l.png",
        "--checkpoint",
        "models/ckpt.pt",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_tracking_failure_is_loud_exits_nonzero_and_leaves_outputs_alone(tmp_path):
    write_committed_params(tmp_path)
    (tmp_path / "train.json").write_text(
        json.dumps({"epochs": 1, "lr": 0.15, "final_loss": 0.5, "train_time_s": 1.0, "images_per_s": 10.0})
    )
    (tmp_path / "probe.json").write_text(
        json.dumps({"top1": 0.5, "top3": 0.8, "knn": 0.4, "per_class": {"0": 0.5}, "shifted_top1": {"-3": 0.4}})
    )
    (tmp_path / "examples.json").write_text(json.dumps({"false_negative_rate": 0.0}))
    (tmp_path / "loss.csv").write_text("epoch,loss\n1,0.5\n")
    (tmp_path / "encoder.pt").write_bytes(b"weights")
    (tmp_path / "figure.png").write_bytes(b"png")
    (tmp_path / "data").mkdir()
    images, labels = np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)
    (tmp_path / "data" / "meta.json").write_text(
        json.dumps({"digests": {"test": {"images": content_digest(images), "labels": content_digest(labels)}}})
    )
    np.save(tmp_path / "data" / "test_images.npy", images)
    np.save(tmp_path / "data" / "test_labels.npy", labels)
    (tmp_path / "not-a-folder").write_text("")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    result = stage(
        "track",
        "--data",
        "data",
        "--train-metrics",
        "train.json",
        "--probe-metrics",
        "probe.json",
        "--examples-metrics",
        "examples.json",
        "--loss-csv",
        "loss.csv",
        "--encoder",
        "encoder.pt",
        "--artifacts",
        "figure.png",
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/not-a-folder/mlflow.db", "DVC_ROOT": str(tmp_path)},
    )
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(
        f"error: MLflow tracking failed for mnist-triplet-simclr (store sqlite:///{tmp_path}/not-a-folder"
    )
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
    result = stage(
        "probe",
        "--embeddings",
        "embeddings.npz",
        "--metrics",
        "probe.json",
        "--confusion-csv",
        "confusion.csv",
        "--confusion-png",
        "confusion.png",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    expected = probe(embeddings, labels, test_size=0.2, knn_k=30, max_iter=1000, seed=0, standardize=standardize)
    assert json.loads((tmp_path / "probe.json").read_text())["top1"] == round(expected["top1"], 4)


def tiny_dataset(folder: Path, test_class_offset: int = 0) -> Path:
    """200 training and 100 test images in the download stage's layout, each class at its own brightness; the test
    images of class c have the brightness of the training images of class c + `test_class_offset`."""
    rng = np.random.default_rng(0)
    data = folder / "data"
    data.mkdir()
    digests = {}
    for split, n, offset in (("train", 200, 0), ("test", 100, test_class_offset)):
        labels = np.repeat(np.arange(10), n // 10).astype(np.uint8)
        brightness = (labels[:, None, None] + offset) % 10 * 25
        images = np.clip(brightness + rng.normal(0, 5, (n, 28, 28)), 0, 255).astype(np.uint8)
        np.save(data / f"{split}_images.npy", images)
        np.save(data / f"{split}_labels.npy", labels)
        digests[split] = {"images": content_digest(images), "labels": content_digest(labels)}
    (data / "meta.json").write_text(json.dumps({"digests": digests}))
    return data


def pixels_of(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw_pixels baseline's features of a split (its embedding-sized ones), and the labels."""
    images = np.load(data / f"{split}_images.npy")
    return images.reshape(len(images), -1).astype(np.float32) / 255, np.load(data / f"{split}_labels.npy").astype(
        np.int64
    )


def test_baseline_stage_scores_the_features_with_the_scenarios_probe(tmp_path):
    data = tiny_dataset(tmp_path)
    params = committed_params()
    params["probe"]["knn_k"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("baseline", "--name", "raw_pixels", "--data", "data", "--metrics", "raw.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected = probe(*pixels_of(data, "test"), **fit_settings(params["probe"]), seed=0)
    written = json.loads((tmp_path / "raw.json").read_text())
    assert (written["top1"], written["knn"]) == (round(expected["top1"], 4), round(expected["knn"], 4))
    assert list(written["per_class"]) == [str(d) for d in range(10)]
    assert "protocol" not in written


def test_baseline_stage_with_the_standard_protocol_fits_on_the_training_images(tmp_path):
    # test images of class c look like training images of class c + 1: fitted on the training images, the probe
    # calls every one c + 1 (top-1 0); fitted on the test images themselves (the study protocol) it gets them right
    data = tiny_dataset(tmp_path, test_class_offset=1)
    params = committed_params()
    params["probe"].update(knn_k=3, protocol="standard")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("baseline", "--name", "raw_pixels", "--data", "data", "--metrics", "raw.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = read_metrics(tmp_path / "raw.json")
    assert (written["top1"], written["knn"], written["protocol"]) == (0.0, 0.0, "standard")
    assert (
        probe(*pixels_of(data, "test"), **fit_settings({**params["probe"], "protocol": "study"}), seed=0)["top1"] == 1.0
    )


def test_an_unknown_baseline_is_one_line_naming_the_known_ones(tmp_path):
    write_committed_params(tmp_path)
    result = stage("baseline", "--name", "pixels", "--data", "data", "--metrics", "pixels.json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no baseline 'pixels'; known: {', '.join(BASELINES)}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize("protocol", ["study", "standard"])
def test_embed_stage_stores_the_training_images_features_for_the_standard_protocol_only(tmp_path, protocol):
    data = tiny_dataset(tmp_path)
    torch.manual_seed(0)
    save_encoder(make_encoder(1), {"channels": 1}, tmp_path / "encoder.pt")
    params = committed_params()
    params["probe"]["protocol"] = protocol
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = stage("embed", "--data", "data", "--model", "encoder.pt", "--out", "embeddings.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = np.load(tmp_path / "embeddings.npz")
    training = {"train_embedding", "train_backbone", "train_labels"}
    assert saved["embedding"].shape == (100, 32) and saved["labels"].tolist() == np.repeat(np.arange(10), 10).tolist()
    if protocol == "study":
        assert not training & set(saved.files)
    else:
        assert (saved["train_embedding"].shape, saved["train_backbone"].shape) == ((200, 32), (200, 256))
        np.testing.assert_array_equal(saved["train_labels"], np.load(data / "train_labels.npy"))
        encoder = load_encoder(tmp_path / "encoder.pt", torch.device("cpu"))
        embedded = embed_images(encoder, np.load(data / "train_images.npy")[:, None], params["embed"]["batch_size"])
        np.testing.assert_array_equal(saved["train_backbone"], embedded["backbone"])
        assert "train_backbone_shift+3" not in saved.files  # the training images are never shifted


def test_probe_stage_with_the_standard_protocol_fits_on_the_stored_training_features_or_refuses_a_file_without(
    tmp_path,
):
    train_labels, labels = np.repeat(np.arange(10), 50), np.repeat(np.arange(10), 20)
    corners = np.eye(10) * 5
    np.savez(tmp_path / "study.npz", embedding=corners[(labels + 1) % 10], labels=labels)
    np.savez(
        tmp_path / "standard.npz",
        embedding=corners[(labels + 1) % 10],
        labels=labels,
        train_embedding=corners[train_labels],
        train_labels=train_labels,
    )
    write_params(tmp_path, "probe", "protocol", "standard")
    outputs = ("--metrics", "probe.json", "--confusion-csv", "confusion.csv", "--confusion-png", "confusion.png")
    refused = stage("probe", "--embeddings", "study.npz", *outputs, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: the embed stage's file holds no training images' 'embedding' features, "
        "which probe.protocol=standard fits the probe on: it was embedded for the study "
        "protocol; re-run the embed stage: delete it and run `dvc repro` to recompute it"
    )
    assert not (tmp_path / "probe.json").exists()
    result = stage("probe", "--embeddings", "standard.npz", *outputs, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = read_metrics(tmp_path / "probe.json")
    assert (written["top1"], written["protocol"]) == (0.0, "standard")  # every test image called its class + 1
    assert len((tmp_path / "confusion.csv").read_text().splitlines()) == 1 + 200  # every test image scored
