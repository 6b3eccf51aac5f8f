"""A tiny mirror in the official file formats, so tests exercise the real decoding path in < 1 s.

Each class gets its own brightness and a horizontal bar at its own height, plus noise, so a
model trained on the tiny data can beat chance and pipeline tests can check that it learns.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from contrastlab.datasets import CIFAR_ARCHIVE, DATASETS, content_digest

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


def _write_idx_set(folder: Path, splits: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, stem in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        (folder / f"{stem}-images-idx3-ubyte.gz").write_bytes(_idx_bytes(images))
        (folder / f"{stem}-labels-idx1-ubyte.gz").write_bytes(_idx_bytes(labels))


def _add_pickle(tar: tarfile.TarFile, name: str, obj: dict) -> None:
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _batch(label: str, images: np.ndarray, labels: np.ndarray) -> dict:
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)  # R, G, B planes per row
    return {
        "batch_label": label,
        "labels": [int(x) for x in labels],
        "data": np.ascontiguousarray(rows),
        "filenames": [f"{label.split()[0]}_{i:05d}.png" for i in range(len(images))],
    }


def _write_cifar(folder: Path, splits: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / CIFAR_ARCHIVE, "w:gz") as tar:
        _add_pickle(tar, "batches.meta", {
            "label_names": list(DATASETS["cifar10"].classes),
            "num_cases_per_batch": len(splits["train"][1]) // 5,
            "num_vis": 3 * 32 * 32,
        })  # fmt: skip
        train_images, train_labels = splits["train"]
        chunks = zip(np.array_split(train_images, 5), np.array_split(train_labels, 5))
        for i, (images, labels) in enumerate(chunks, start=1):
            _add_pickle(tar, f"data_batch_{i}", _batch(f"training batch {i} of 5", images, labels))
        _add_pickle(tar, "test_batch", _batch("testing batch 1 of 1", *splits["test"]))


# dataset -> writer of its official file format
WRITERS = {"mnist": _write_idx_set, "cifar10": _write_cifar, "fashion_mnist": _write_idx_set}


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
        WRITERS[name](root / spec.mirror_folder, splits)
        digests[name] = {
            split: {"images": content_digest(images), "labels": content_digest(labels)}
            for split, (images, labels) in splits.items()
        }
    return digests
