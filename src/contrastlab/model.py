"""The study's Siamese encoder: five bias-free convolutions to a 32-d sigmoid embedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

EMBEDDING_DIM = 32


def make_encoder(channels: int) -> nn.Sequential:
    """The protocol's encoder, layer for layer (about 181k parameters for any input size 28-32)."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, kernel_size=2, stride=2, padding=1, bias=False),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, kernel_size=2, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, kernel_size=2, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2),
        nn.Conv2d(128, 256, kernel_size=2, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(256),
        nn.LeakyReLU(0.2),
        nn.Conv2d(256, 8, kernel_size=2, stride=1, padding=0, bias=False),
        nn.Sigmoid(),
        nn.Flatten(),
    )


def pick_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def embed_images(encoder: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Embed uint8 (N, C, H, W) images in eval mode (BatchNorm uses its running statistics)."""
    from contrastlab.augment import normalize, to_unit

    device = next(encoder.parameters()).device
    encoder.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        chunks.append(encoder(normalize(to_unit(batch))).float().cpu())
    return torch.cat(chunks).numpy()
