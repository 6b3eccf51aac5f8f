"""The study's training path, the notebook way: the yardstick the project's own path is timed against.

What the reference notebook did, with the same encoder, losses, batch size and data as the
project: one augmented view per anchor made once, image by image, with torchvision's PIL
transforms; every example stored as a tuple of float tensors in a Python list; a DataLoader
over that list; one forward pass per member; PyTorch's default memory layout. Kept out of the
package on purpose: nothing in the pipeline uses it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from contrastlab.methods.encoders import make_encoder
from contrastlab.methods.losses import LOSSES


def study_transform(aug: str, size: int) -> T.Compose:
    """The study's torchvision pipeline for `aug` at image size `size` (PROTOCOL.md)."""
    to_input = [T.ToTensor(), T.Normalize(0.5, 0.5)]
    if aug == "none":
        return T.Compose(to_input)
    if aug == "pad_rotate_scale":
        return T.Compose(
            [
                T.Resize(2 * size),
                T.Pad(18),
                T.RandomRotation(15),
                T.CenterCrop(int(2 * size * 1.125)),
                T.Resize(size),
                *to_input,
            ]
        )
    if aug == "simclr":
        return T.Compose(
            [
                T.RandomResizedCrop(size),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
                T.RandomGrayscale(0.2),
                T.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0)),
                *to_input,
            ]
        )
    raise ValueError(f"unknown augmentation {aug!r}")


def to_pil(image: np.ndarray) -> Image.Image:
    """uint8 (C, H, W) -> PIL image, as torchvision's datasets hand them out."""
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def make_views(images: np.ndarray, indices: np.ndarray, aug: str) -> list[torch.Tensor]:
    """One view per index, made image by image with PIL (the study drew them once, before training)."""
    transform = study_transform(aug, images.shape[-1])
    return [transform(to_pil(images[i])) for i in indices]


def build_dataset(images: np.ndarray, examples: dict[str, np.ndarray], aug: str) -> list[tuple]:
    """The study's Python list of tensor tuples: (anchor, view, negative) or (first, second, target)."""
    plain = study_transform("none", images.shape[-1])
    members, augmented, target = examples["members"], examples["augmented"], examples["target"]
    views = iter(make_views(images, members[augmented], aug))
    rows = []
    for example, flags, t in zip(members, augmented, target, strict=True):
        tensors = tuple(
            next(views) if flag else plain(to_pil(images[i])) for i, flag in zip(example, flags, strict=True)
        )
        rows.append(tensors if len(tensors) == 3 else (*tensors, torch.tensor(float(t))))
    return rows


def train_steps(
    dataset: list[tuple],
    loss: str,
    channels: int,
    lr: float,
    batch_size: int,
    max_steps: int | None = None,
    epochs: int = 1,
    seed: int = 0,
) -> tuple[int, float]:
    """Train as the notebook did for `epochs` (or at most `max_steps` batches in all);
    return (images embedded, seconds)."""
    torch.manual_seed(seed)
    encoder = make_encoder(channels)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=lr)
    loss_fn = LOSSES[loss].fn
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    seen, steps, start = 0, 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            if steps == max_steps:
                return seen, time.perf_counter() - start
            if loss == "triplet":
                members, target = batch, torch.ones(len(batch[0]))
            else:
                members, target = batch[:2], batch[2]
            embeddings = [encoder(member) for member in members]
            batch_loss = loss_fn(embeddings, target)
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            seen += len(members) * len(members[0])
            steps += 1
    return seen, time.perf_counter() - start


# The data set of `build_here`, kept in the process that built it for `train_here`.
_built: list[tuple] = []


def build_here(images: np.ndarray, examples: dict[str, np.ndarray], aug: str) -> float:
    """`build_dataset`, kept in this process (a benchmark's worker) for `train_here`; returns its seconds."""
    start = time.perf_counter()
    _built[:] = build_dataset(images, examples, aug)
    return time.perf_counter() - start


def train_here(*args, **kwargs) -> tuple[int, float]:
    """`train_steps` on the data set of the last `build_here` in this process."""
    return train_steps(_built, *args, **kwargs)
