"""The embed stage's file: each representation of the test images (`probe.features`: the embedding,
the backbone's features) under its own name, and its copies of horizontally shifted images beside it."""

from __future__ import annotations

from typing import Mapping

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
        raise FileError(f"the embed stage's file holds no '{features}' features (only {', '.join(sorted(saved))}): "
                        f"it predates them; {RECOMPUTE}")
    return saved[features], shifted
