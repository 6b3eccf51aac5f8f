"""A tiny mirror in the official file formats, so tests exercise the real decoding path in < 1 s.

Each class gets its own brightness and a horizontal bar at its own height, plus noise, so a
model trained on the tiny data can beat chance and pipeline tests can check that it learns.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import yaml

from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import CIFAR_ARCHIVE, content_digest
from project import ROOT, committed_params

N_CLASSES = 10


def _images(labels: np.ndarray, size: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 images in the digest layout: (N, size, size) or (N, size, size, channels)."""
    n = len(labels)
    labels = labels.astype(np.int64)
    base = 30.0 + 20.0 * labels  # class-dependent brightness
    pixels = base[:, None, None, None] + rng.normal(0.0, 20.0, (n, size, size, channels))
    rows = 2 + 2 * labels  # class-dependent bar, two rows high
    for i, row in enumerate(rows):
        pixels[i, row : row + 2] += 80.0
    if channels > 1:  # a class-dependent tint, so colour carries information too
        pixels += ((labels[:, None] * 37 + 80 * np.arange(channels)) % 60)[:, None, None, :]
    images = np.clip(pixels, 0, 255).astype(np.uint8)
    return images[..., 0] if channels == 1 else images


def _labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(N_CLASSES, dtype=np.uint8), per_class))


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = 0x800 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def _write_idx_set(folder: Path, splits: dict) -> dict:
    """The official idx files; returns no file digests (idx files are checked after decoding)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, stem in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(_idx_bytes(images))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(_idx_bytes(labels))
    return {}


def _add_pickle(tar: tarfile.TarFile, name: str, obj: dict) -> str:
    """Add one batch; return its file digest as the digests' "files" entry lists it."""
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
    return f"sha256:{hashlib.sha256(payload).hexdigest()}"


def _batch(label: str, images: np.ndarray, labels: np.ndarray) -> dict:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)  # R, G, B planes per row
    return {
        "batch_label": label,
        "labels": [int(x) for x in labels],
        "data": np.ascontiguousarray(rows),
        "filenames": [f"{label.split()[0]}_{i:05d}.png" for i in range(len(images))],
    }


def _write_cifar(folder: Path, splits: dict) -> dict:
    """The official archive layout; returns {"files": {batch: [digest]}} for the digests file."""
    files = {}
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / CIFAR_ARCHIVE, "w:gz") as tar:
        _add_pickle(tar, "batches.meta", {
            "label_names": list(DATASETS["cifar10"].classes),
            "num_cases_per_batch": len(splits["train"][1]) // 5,
            "num_vis": 3 * 32 * 32,
        })  # fmt: skip
        train_images, train_labels = splits["train"]
        chunks = zip(np.array_split(train_images, 5), np.array_split(train_labels, 5), strict=True)
        for i, (images, labels) in enumerate(chunks, start=1):
            name = f"data_batch_{i}"
            files[name] = [_add_pickle(tar, name, _batch(f"training batch {i} of 5", images, labels))]
        files["test_batch"] = [_add_pickle(tar, "test_batch", _batch("testing batch 1 of 1", *splits["test"]))]
    return {"files": files}


# dataset -> writer of its official file format
WRITERS = {"idx": _write_idx_set, "cifar": _write_cifar}  # by file format: every dataset of that format


def write_tiny_mirror(root: Path, per_class_train: int = 12, per_class_test: int = 6, seed: int = 0) -> dict:
    """Write `root/{mnist,fashion-mnist,cifar10}` with tiny data; return its digests (OFFICIAL_DIGESTS layout)."""
    root = Path(root)
    digests = {}
    for offset, name in enumerate(DATASETS):
        spec = DATASETS[name]
        rng = np.random.default_rng([seed, offset])
        splits = {}
        for split, per_class in (("train", per_class_train), ("test", per_class_test)):
            labels = _labels(per_class, rng)
            splits[split] = (_images(labels, spec.size, spec.channels, rng), labels)
        file_digests = WRITERS[spec.file_format](root / spec.mirror_folder, splits)
        digests[name] = {
            split: {"images": content_digest(images), "labels": content_digest(labels)}
            for split, (images, labels) in splits.items()
        } | file_digests
    return digests


COPIED = ["dvc.yaml", "pyproject.toml", "stages", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore"]
GIT = ("git", "-c", "user.name=test", "-c", "user.email=test@example.com")


def sh(*cmd: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_tiny_repo(tmp: Path, cpu_kernels: str = "native") -> tuple[Path, dict]:
    """A git copy of this repository at `tmp/repo` whose params point at a tiny mirror and train for
    seconds; returns it with an environment that runs the copy's code and its own MLflow store."""
    repo = tmp / "repo"
    repo.mkdir()
    for name in COPIED:
        src, dst = ROOT / name, repo / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, dst)
    digests = write_tiny_mirror(tmp / "mirror", per_class_train=12, per_class_test=10)
    (tmp / "digests.json").write_text(json.dumps(digests))

    params = committed_params()  # not the workspace's, which `dvc exp run -S` may have changed
    params["download"].update(mirror=str(tmp / "mirror"), sources=["mirror"], digests=str(tmp / "digests.json"))
    params["pairs"]["anchors_per_class"] = 10
    params["train"].update(epochs=2, batch_size=16)
    params["tsne"].update(n_points=80, perplexity=5, max_iter=250)
    params["probe"]["knn_k"] = 3
    params["cpu_kernels"] = cpu_kernels
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "CONTRASTLAB_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(repo / "src")  # the copy's code, not the checkout's
    env["OMP_NUM_THREADS"] = (
        "2"  # the threads tests/tiny_scenario_expected.json was trained with: others sum in another order
    )
    sh("git", "init", "-q", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "copy", cwd=repo, env=env)
    return repo, env
