"""Train the Siamese encoder: one file, read top to bottom.

Each step takes a batch of examples (pairs, triplets or two views of image indices), turns every
member into an input image (augmented on the fly where the example says so), embeds each member
with the shared encoder in its own forward pass (as the study did: BatchNorm then normalises
anchors, augmented positives and negatives each with their own batch statistics), optionally
swaps each negative for a semi-hard one from the batch, and applies the loss. Augmented views are
fresh every epoch (`views="fresh"`) or drawn once before training and reused (`views="once"`,
the study's way). The optimizer and learning-rate schedule default to the protocol's plain SGD
at a fixed rate; AdamW, momentum, weight decay, warm-up, cosine and one-cycle schedules are options.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from contrastlab.augment import AUGMENTATIONS, normalize, to_unit
from contrastlab.losses import LOSSES, LossOptions, semi_hard_negatives
from contrastlab.model import make_encoder
from contrastlab.params import PRECISIONS


@dataclass
class TrainResult:
    encoder: torch.nn.Module
    epoch_losses: list[float] = field(default_factory=list)
    train_time_s: float = 0.0
    images_seen: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_time_s if self.train_time_s else 0.0


def draw_fixed_views(images, members, augmented, augment, generator, chunk=4096):
    """The study's views: one augmented uint8 image per augmented member, drawn once.

    Returns the views and a (N, k) table pointing each augmented member at its view (-1 elsewhere).
    """
    wanted = members[augmented]
    views = torch.empty((len(wanted), *images.shape[1:]), dtype=torch.uint8, device=images.device)
    for start in range(0, len(wanted), chunk):
        view = augment(images[wanted[start : start + chunk]], generator)
        views[start : start + chunk] = (view * 255).round().to(torch.uint8)
    slot = torch.full(members.shape, -1, dtype=torch.long, device=images.device)
    slot[augmented] = torch.arange(len(wanted), device=images.device)
    return views, slot


@dataclass(frozen=True)
class Recipe:
    """How the weights move: the protocol is plain SGD at a constant learning rate."""

    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0


def make_optimizer(parameters, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, lr: float, steps_per_epoch: int,
                  epochs: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step learning rate: linear warm-up, then constant or cosine to 0; one-cycle has its own warm-up
    (30% of the steps) and ignores `warmup_epochs`."""
    total, warmup = steps_per_epoch * epochs, steps_per_epoch * recipe.warmup_epochs
    sched = torch.optim.lr_scheduler
    if recipe.schedule == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=lr, total_steps=total, cycle_momentum=False)  # keep train.momentum
    after = sched.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)) if recipe.schedule == "cosine" else None
    if not warmup:
        return after
    ramp = sched.LinearLR(optimizer, start_factor=1 / warmup, total_iters=max(1, warmup - 1))  # lr*(step+1)/warmup
    return ramp if after is None else sched.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def train(
    images: torch.Tensor,
    examples: dict[str, np.ndarray],
    *,
    loss: str,
    aug: str,
    epochs: int,
    batch_size: int,
    lr: float,
    views: str,
    seed: int,
    precision: str = "fp32",
    head: str = "sigmoid",
    recipe: Recipe = Recipe(),
    options: LossOptions = LossOptions(),
    device: torch.device,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh encoder on uint8 `images` (N, C, H, W) with the examples from `contrastlab.pairs`.

    `precision="bf16"` runs the encoder's forward passes under bfloat16 autocast; augmentation, loss,
    weights and optimizer stay fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}")
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    shuffle_rng = torch.Generator().manual_seed(seed)
    augment_rng = torch.Generator(device).manual_seed(seed + 1)
    loss_fn = LOSSES[loss].fn
    augment = AUGMENTATIONS[aug]

    images = images.to(device)
    members = torch.from_numpy(examples["members"]).long().to(device)
    augmented = torch.from_numpy(examples["augmented"]).to(device)
    target = torch.from_numpy(examples["target"]).float().to(device)
    labels = torch.from_numpy(examples["labels"]).long().to(device)
    mine = str(examples.get("negatives", "label_aware")) == "hard"
    n_examples, k = members.shape

    encoder = make_encoder(images.shape[1], head).to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(encoder.parameters(), recipe, lr)
    schedule = make_schedule(optimizer, recipe, lr, -(-n_examples // batch_size), epochs)
    fixed_views = draw_fixed_views(images, members, augmented, augment, augment_rng) if views == "once" else None

    def inputs_for(rows: torch.Tensor) -> torch.Tensor:
        """All members of the chosen examples as one normalised batch, member after member."""
        index = members[rows].T.reshape(-1)
        is_view = augmented[rows].T.reshape(-1)
        x = torch.empty((len(index), *images.shape[1:]), dtype=torch.float32, device=device)
        x[~is_view] = to_unit(images[index[~is_view]])
        if is_view.any():
            if fixed_views is None:
                x[is_view] = augment(images[index[is_view]], augment_rng)
            else:
                views_u8, slot = fixed_views
                x[is_view] = to_unit(views_u8[slot[rows].T.reshape(-1)[is_view]])
        return normalize(x).contiguous(memory_format=torch.channels_last)

    result = TrainResult(encoder)
    encoder.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n_examples, generator=shuffle_rng).to(device)
        batches = range(0, n_examples, batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", disable=not progress, leave=True)
        epoch_loss, epoch_start, epoch_images = 0.0, time.perf_counter(), 0
        for start in bar:
            rows = order[start : start + batch_size]
            x = inputs_for(rows)  # augmentation stays fp32: autocast would also turn the blur into bf16
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                embeddings = [encoder(member).float() for member in x.chunk(k)]
            if mine:  # members are (anchor, positive, negative): the pool is every anchor and negative
                pool, pool_labels = torch.cat([embeddings[0], embeddings[2]]), labels[rows][:, [0, 2]].T.reshape(-1)
                embeddings[2] = semi_hard_negatives(embeddings[0], embeddings[1], pool, labels[rows, 0], pool_labels,
                                                    options.margin)
            batch_loss = loss_fn(embeddings, target[rows], labels[rows, 0], options)
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()

            epoch_loss += batch_loss.item() * len(rows)
            epoch_images += len(rows) * k
            rate = epoch_images / (time.perf_counter() - epoch_start)
            bar.set_postfix(loss=f"{batch_loss.item():.4f}", img_s=f"{rate:,.0f}")
        result.train_time_s += time.perf_counter() - epoch_start
        result.images_seen += epoch_images
        result.epoch_losses.append(epoch_loss / n_examples)
        bar.set_postfix(loss=f"{result.epoch_losses[-1]:.4f}", img_s=f"{epoch_images / (time.perf_counter() - epoch_start):,.0f}")
        bar.close()
    return result
