"""Build the study's training examples as seeded index arrays (no image copies).

Protocol: for each class c the first `anchors_per_class` training images of c are anchors; the
images of all other classes are shuffled and the first ones become the anchors' negatives.
The positive is always an augmented view of the anchor itself.

Every loss gets the same layout, so the training loop needs no per-loss branches:
- `members` (N, k): image indices of the k images of each example,
- `augmented` (N, k): which members are replaced by an augmented view,
- `target` (N,): +1 similar / -1 dissimilar (used by the pairwise loss).
"""

from __future__ import annotations

import numpy as np

from contrastlab.datasets import DataError


def anchors_and_negatives(labels: np.ndarray, anchors_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor indices and one label-aware negative per anchor, class by class."""
    rng = np.random.default_rng(seed)
    anchors, negatives = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < anchors_per_class:
            raise DataError(
                f"pairs.anchors_per_class={anchors_per_class} but class {c} has only "
                f"{len(members)} training images; lower pairs.anchors_per_class"
            )
        others = np.flatnonzero(labels != c)
        rng.shuffle(others)
        anchors.append(members[:anchors_per_class])
        negatives.append(others[:anchors_per_class])
    return np.concatenate(anchors), np.concatenate(negatives)


def build_triplets(anchor: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """(anchor, augmented anchor, negative) triplets."""
    n = len(anchor)
    return {
        "members": np.stack([anchor, anchor, negative], axis=1),
        "augmented": np.tile([False, True, False], (n, 1)),
        "target": np.ones(n, dtype=np.int8),
    }


def build_pairs(anchor: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """(anchor, augmented anchor) pairs with target +1, then (anchor, negative) pairs with -1."""
    n = len(anchor)
    return {
        "members": np.concatenate([np.stack([anchor, anchor], 1), np.stack([anchor, negative], 1)]),
        "augmented": np.concatenate([np.tile([False, True], (n, 1)), np.zeros((n, 2), dtype=bool)]),
        "target": np.concatenate([np.ones(n, dtype=np.int8), -np.ones(n, dtype=np.int8)]),
    }


BUILDERS = {"pairs": build_pairs, "triplets": build_triplets}


def build(labels: np.ndarray, layout: str, anchors_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """The training examples in `layout` ("pairs" or "triplets", as the loss asks)."""
    anchor, negative = anchors_and_negatives(labels, anchors_per_class, seed)
    return BUILDERS[layout](anchor, negative)
