"""Contrastive losses registered by name, each with the protocol's default lr and epochs.

A loss takes the embeddings of one batch, one (B, D) tensor per member of the examples laid
out by `contrastlab.pairs`, plus the +1/-1 targets, and returns a scalar. A new loss is one function plus one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from contrastlab.params import AUTO


@dataclass(frozen=True)
class Loss:
    fn: Callable[..., torch.Tensor]
    examples: str      # layout the pair builder makes for it: "pairs" or "triplets"
    lr: float          # default SGD learning rate (the study's value)
    epochs: int        # default epochs (as in the published results)


def pairwise(members: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """torch.nn.CosineEmbeddingLoss() with margin 0: 1-cos for +1 pairs, max(0, cos) for -1 pairs."""
    first, second = members
    return F.cosine_embedding_loss(first, second, target, margin=0.0)


def triplet(members: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """torch.nn.TripletMarginLoss(): max(0, d(a,p) - d(a,n) + 1) with Euclidean distance."""
    anchor, positive, negative = members
    return F.triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2)


LOSSES: dict[str, Loss] = {
    "pairwise": Loss(pairwise, examples="pairs", lr=0.05, epochs=5),
    "triplet": Loss(triplet, examples="triplets", lr=0.15, epochs=10),
}


def epochs_and_lr(loss: str, train: dict) -> tuple[int, float]:
    """`train.epochs` and `train.lr` with 'auto' replaced by the loss's published value."""
    epochs = LOSSES[loss].epochs if train["epochs"] == AUTO else train["epochs"]
    lr = LOSSES[loss].lr if train["lr"] == AUTO else train["lr"]
    return epochs, lr
