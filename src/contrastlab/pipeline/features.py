"""The embed stage's file: each representation of the test images (`probe.features`: the embedding,
the backbone's features) under its own name, and its copies of horizontally shifted images beside it; for
`probe.protocol: standard` also the training images' representations and labels, which the probe fits on;
and whether a representation collapsed (every image at one point), which the probe and t-SNE stages report."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from contrastlab.infra.errors import FileError
from contrastlab.infra.files import RECOMPUTE


def shifted_name(features: str, pixels: int) -> str:
    """Where `features` of the test images shifted by `pixels` are kept: "backbone_shift+3"."""
    return f"{features}_shift{pixels:+d}"


def stored_features(saved: Mapping[str, np.ndarray], features: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """`features` of the test images, and of each shifted copy by its shift in pixels ("3", "-3")."""
    shifted = {}
    for name, array in saved.items():
        kind, _, pixels = name.partition("_shift")
        if kind == features and pixels:
            shifted[str(int(pixels))] = array
    if features not in saved:
        raise FileError(
            f"the embed stage's file holds no '{features}' features (only {', '.join(sorted(saved))}): "
            f"it predates them; {RECOMPUTE}"
        )
    return saved[features], shifted


def training_name(name: str) -> str:
    """Where the training images' `name` ("embedding", "backbone", "labels") is kept: "train_backbone"."""
    return f"train_{name}"


def stored_training_features(saved: Mapping[str, np.ndarray], features: str) -> tuple[np.ndarray, np.ndarray]:
    """`features` of the training images and their labels, which the standard protocol fits the probe on."""
    if training_name(features) not in saved:
        raise FileError(
            f"the embed stage's file holds no training images' '{features}' features, which "
            "probe.protocol=standard fits the probe on: it was embedded for the study protocol; re-run the "
            f"embed stage: {RECOMPUTE}"
        )
    return saved[training_name(features)], saved[training_name("labels")]


# Rows count as one point when they spread around their mean by at most this fraction of their size:
# float32 rounding of identical rows is ~1e-7 of it, while a healthy representation's spread is of its size.
COLLAPSE_TOLERANCE = 1e-6


def collapse_warning(features: np.ndarray, name: str) -> str | None:
    """The warning if `name` features (rows: images) collapsed, else None: every coordinate's spread across the
    rows is ~0 relative to the features' scale, i.e. all rows are (nearly) the same point and no probe or map
    can tell the images apart. In float64, after dividing by the largest magnitude (1e8-sized rows square
    safely): the root-mean-square distance of the rows from their mean is at most COLLAPSE_TOLERANCE of their
    root-mean-square norm; all-zero features collapsed too. Fewer than two rows cannot tell."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return None
    size = np.abs(x).max()
    if size == 0:
        what = f"all {len(x)} rows are 0"
    else:
        x = x / size
        spread, scale = np.sqrt(x.var(axis=0).sum()), np.sqrt(np.mean(np.sum(x**2, axis=1)))
        if spread > COLLAPSE_TOLERANCE * scale:
            return None
        what = f"all {len(x)} rows are the same point (spread {spread / scale:.1g} of their norm {scale * size:.3g})"
    return f"the {name} features collapsed: {what}; lower train.lr or change the recipe"
