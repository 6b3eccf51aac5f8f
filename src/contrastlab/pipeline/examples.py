"""Build the study's training examples as seeded index arrays (no image copies).

Protocol: for each class c the first `anchors_per_class` training images of c are anchors; the
images of all other classes are shuffled and the first ones become the anchors' negatives
(`negatives="label_aware"`). `random` draws each negative from all training images but the anchor
itself, without looking at labels (so some negatives share the anchor's class: the false-negative
rate); `hard` keeps the label-aware negatives, which training then replaces by semi-hard ones mined
in the batch. The positive is an augmented view of the anchor itself.

Every loss gets the same layout, so the training loop needs no per-loss branches:
- `members` (N, k): image indices of the k images of each example,
- `augmented` (N, k): which members are replaced by an augmented view,
- `negative` (N, k): which members are negatives of the example's anchor (member 0),
- `labels` (N, k): the class of every member,
- `target` (N,): +1 similar / -1 dissimilar (used by the pairwise and contrastive losses),
- `negatives`: the negatives mode, so that training knows whether to mine.
"""

from __future__ import annotations

import numpy as np

from contrastlab.infra.errors import DataError


def anchors_and_negatives(
    labels: np.ndarray, anchors_per_class: int, seed: int, negatives: str = "label_aware"
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor indices and one negative per anchor, class by class."""
    rng = np.random.default_rng(seed)
    anchors, chosen = [], []
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
        chosen.append(others[:anchors_per_class])
    anchor = np.concatenate(anchors)
    if negatives == "random":
        drawn = rng.integers(0, len(labels) - 1, len(anchor))
        return anchor, drawn + (drawn >= anchor)  # skips the anchor's own index
    return anchor, np.concatenate(chosen)


def build_triplets(anchor: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """(anchor, augmented anchor, negative) triplets."""
    n = len(anchor)
    return {
        "members": np.stack([anchor, anchor, negative], axis=1),
        "augmented": np.tile([False, True, False], (n, 1)),
        "negative": np.tile([False, False, True], (n, 1)),
        "target": np.ones(n, dtype=np.int8),
    }


def build_pairs(anchor: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """(anchor, augmented anchor) pairs with target +1, then (anchor, negative) pairs with -1."""
    n = len(anchor)
    return {
        "members": np.concatenate([np.stack([anchor, anchor], 1), np.stack([anchor, negative], 1)]),
        "augmented": np.concatenate([np.tile([False, True], (n, 1)), np.zeros((n, 2), dtype=bool)]),
        "negative": np.concatenate([np.zeros((n, 2), dtype=bool), np.tile([False, True], (n, 1))]),
        "target": np.concatenate([np.ones(n, dtype=np.int8), -np.ones(n, dtype=np.int8)]),
    }


def build_views(anchor: np.ndarray, negative: np.ndarray) -> dict[str, np.ndarray]:
    """Two augmented views of each anchor; the other images in the batch are its negatives."""
    n = len(anchor)
    return {
        "members": np.stack([anchor, anchor], axis=1),
        "augmented": np.ones((n, 2), dtype=bool),
        "negative": np.zeros((n, 2), dtype=bool),
        "target": np.ones(n, dtype=np.int8),
    }


BUILDERS = {"pairs": build_pairs, "triplets": build_triplets, "views": build_views}


def build(
    labels: np.ndarray,
    layout: str,
    anchors_per_class: int,
    seed: int,
    negatives: str = "label_aware",
    augment_anchor: bool = False,
) -> dict[str, np.ndarray]:
    """The training examples in `layout` ("pairs", "triplets" or "views", as the loss asks)."""
    anchor, negative = anchors_and_negatives(labels, anchors_per_class, seed, negatives)
    examples = BUILDERS[layout](anchor, negative)
    if augment_anchor:
        examples["augmented"][:, 0] = True
    examples["labels"] = labels[examples["members"]]
    examples["negatives"] = np.array(negatives)
    return examples


def false_negative_rate(examples: dict[str, np.ndarray]) -> float:
    """Share of the negatives that have the anchor's class. For two-view examples, whose negatives
    are the rest of the batch, the chance that two different anchors share a class."""
    labels = examples["labels"]
    if examples["negative"].any():
        return float(np.mean((labels == labels[:, :1])[examples["negative"]]))
    counts = np.bincount(labels[:, 0])
    n = counts.sum()
    return float((counts * (counts - 1)).sum() / (n * (n - 1))) if n > 1 else 0.0
