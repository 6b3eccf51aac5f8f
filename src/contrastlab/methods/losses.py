"""Contrastive losses registered by name, each with the protocol's default lr and epochs.

A loss takes the embeddings of one batch, one (B, D) tensor per member of the examples laid out
by `contrastlab.pipeline.examples` (pairs, triplets or two views), the +1/-1 targets, and optionally the
anchors' class labels (needed only by supcon) and the options of `LossOptions` (params.yaml's `train` keys).
A new loss is one function plus one registry line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossOptions:
    margin: float = 1.0  # triplet and contrastive margin (Euclidean distance)
    temperature: float = 0.5  # NT-Xent and SupCon
    invariance: float = 25.0  # VICReg's weights (Bardes et al. 2022's defaults): the views' mean squared distance,
    variance: float = 25.0  # the hinge keeping each coordinate's std at 1 (no collapse),
    covariance: float = 1.0  # and the squared off-diagonal covariances (no redundant coordinates)
    redundancy: float = 0.005  # Barlow Twins' weight of the off-diagonal cross-correlations (Zbontar et al. 2021)


@dataclass(frozen=True)
class Loss:
    fn: Callable[..., torch.Tensor]
    examples: str  # layout the pair builder makes for it: "pairs", "triplets" or "views"
    lr: float  # default learning rate (the study's value for its two losses)
    epochs: int  # default epochs (as in the published results)
    uses_labels: bool = False  # same-class samples are positives, so no negative is a false one
    heads: tuple[str, ...] | None = None  # the `train.head`s it can learn through (None: every head)


def pairwise(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """torch.nn.CosineEmbeddingLoss() with margin 0: 1-cos for +1 pairs, max(0, cos) for -1 pairs."""
    first, second = members
    return F.cosine_embedding_loss(first, second, target, margin=0.0)


def triplet(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """torch.nn.TripletMarginLoss(margin): max(0, d(a,p) - d(a,n) + margin) with Euclidean distance."""
    anchor, positive, negative = members
    return F.triplet_margin_loss(anchor, positive, negative, margin=options.margin, p=2)


def contrastive(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """Hadsell et al. 2006 on Euclidean distance d: y*d^2 + (1-y)*max(0, m-d)^2, y = 1 for +1 pairs."""
    first, second = members
    squared = (first - second).pow(2).sum(dim=1)
    similar = (target > 0).float()
    distance = (squared + 1e-12).sqrt()  # d^2 needs no root; the root of 0 would have no gradient
    return (similar * squared + (1 - similar) * F.relu(options.margin - distance).pow(2)).mean()


def ntxent(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """SimCLR's NT-Xent: the two views of an image are the positives, all other views in the batch
    the negatives (no labels); cosine similarity over the temperature. Written out as cross-entropy
    over the (2B, 2B) similarity matrix: pytorch-metric-learning's NTXentLoss builds a
    (positive pairs x negative pairs) mask, 34 GB for a batch of 1024 images."""
    views = F.normalize(torch.cat(members), dim=1)
    similarity = (views @ views.T / options.temperature).fill_diagonal_(float("-inf"))  # a view is not its own negative
    n = len(members[0])
    partner = (torch.arange(2 * n, device=views.device) + n) % (2 * n)  # n..2n-1, then 0..n-1: made on the device
    return F.cross_entropy(similarity, partner)


def supcon(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020): every view of the same class is a positive."""
    from pytorch_metric_learning import losses as pml  # here, not at the top: its import costs every stage ~0.7 s

    first, second = members
    assert labels is not None, "supcon uses the labels (Loss.uses_labels)"
    return pml.SupConLoss(temperature=options.temperature)(torch.cat([first, second]), torch.cat([labels, labels]))


VARIANCE_EPS = 1e-4  # inside VICReg's square root: the std of a constant coordinate still has a gradient


def _variance_and_covariance(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VICReg's two regularisers of one view's (B, D) embeddings: the mean hinge max(0, 1 - std) over coordinates,
    and the sum of squared off-diagonal covariances over D."""
    centred = z - z.mean(dim=0)
    std = (centred.var(dim=0) + VARIANCE_EPS).sqrt()
    covariance = centred.T @ centred / (len(z) - 1)
    off_diagonal = covariance.pow(2).sum() - covariance.diagonal().pow(2).sum()
    return F.relu(1 - std).mean(), off_diagonal / z.shape[1]


def vicreg(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """VICReg (Bardes et al. 2022): the views' embeddings close (invariance), each coordinate spread over the batch
    (variance) and the coordinates decorrelated (covariance). No negatives and no labels: at small budgets it
    learns faster than SimCLR (the EMP-SSL paper's table). Its embeddings must be free to spread:
    `train.head: linear`."""
    first, second = members
    variance_1, covariance_1 = _variance_and_covariance(first)
    variance_2, covariance_2 = _variance_and_covariance(second)
    return (
        options.invariance * F.mse_loss(first, second)
        + options.variance * (variance_1 + variance_2) / 2
        + options.covariance * (covariance_1 + covariance_2)
    )


def barlow_twins(
    members: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None = None,
    options: LossOptions = LossOptions(),
) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' standardised embeddings pushed to
    the identity: diagonal terms to 1 (invariance), off-diagonal ones to 0, weighted by `redundancy`."""
    first, second = (F.batch_norm(z, None, None, training=True) for z in members)  # per coordinate over the batch
    correlation = first.T @ second / len(first)
    on_diagonal = (1 - correlation.diagonal()).pow(2).sum()
    off_diagonal = correlation.pow(2).sum() - correlation.diagonal().pow(2).sum()
    return on_diagonal + options.redundancy * off_diagonal


LOSSES: dict[str, Loss] = {
    "pairwise": Loss(pairwise, examples="pairs", lr=0.05, epochs=5),
    "triplet": Loss(triplet, examples="triplets", lr=0.15, epochs=10),
    "contrastive": Loss(contrastive, examples="pairs", lr=0.05, epochs=5),
    "ntxent": Loss(ntxent, examples="views", lr=0.15, epochs=10),
    "supcon": Loss(supcon, examples="views", lr=0.15, epochs=10, uses_labels=True),
    # its terms weigh 25x and start large on the study encoder: plain SGD diverges within a few steps from 0.005
    "vicreg": Loss(vicreg, examples="views", lr=0.0005, epochs=10, heads=("linear",)),
    "barlow_twins": Loss(barlow_twins, examples="views", lr=0.15, epochs=10),
}


def multi_crop(
    loss_fn: Callable[..., torch.Tensor],
    full: list[torch.Tensor],
    small: list[torch.Tensor],
    target: torch.Tensor,
    labels: torch.Tensor | None,
    options: LossOptions,
) -> torch.Tensor:
    """A two-view loss over multi-crop's views (SwAV): the two full views against each other, and every small crop
    against each full view; the mean of those 1 + 2 x len(small) pairs' losses."""
    pairs = [full] + [[view, crop] for crop in small for view in full]
    return torch.stack([loss_fn(pair, target, labels, options) for pair in pairs]).mean()


def semi_hard_negatives(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    pool: torch.Tensor,
    anchor_labels: torch.Tensor,
    pool_labels: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """For each anchor, the pool embedding of another class that is semi-hard (FaceNet): farther than
    the positive but within the margin, the closest such. Where none is, the farthest of another class
    (as TensorFlow Addons does): the hardest one instead can collapse training early on."""
    distance = torch.cdist(anchor.detach(), pool.detach())
    positive_distance = (anchor - positive).detach().norm(dim=1, keepdim=True)
    other_class = anchor_labels[:, None] != pool_labels[None, :]
    semi_hard = other_class & (distance > positive_distance) & (distance < positive_distance + margin)
    closest_semi_hard = torch.where(semi_hard, distance, float("inf")).argmin(dim=1)
    farthest_other = torch.where(other_class, distance, float("-inf")).argmax(dim=1)
    return pool[torch.where(semi_hard.any(dim=1), closest_semi_hard, farthest_other)]
