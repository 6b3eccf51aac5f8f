"""Embed the test images with a trained encoder, also shifted sideways for the probe's robustness scores."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from contrastlab.pipeline.preprocess import normalize, to_unit


@torch.no_grad()
def embed_images(encoder: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Embed uint8 (N, C, H, W) images in eval mode (BatchNorm uses its running statistics)."""
    device = next(encoder.parameters()).device
    encoder.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        chunks.append(encoder(normalize(to_unit(batch))).float().cpu())
    return torch.cat(chunks).numpy()


def shift_horizontally(images: np.ndarray, pixels: int) -> np.ndarray:
    """(N, C, H, W) images moved `pixels` to the right (left if negative), the gap filled with 0."""
    shifted = np.zeros_like(images)
    if abs(pixels) >= images.shape[-1]:
        return shifted
    if pixels >= 0:
        shifted[..., pixels:] = images[..., : images.shape[-1] - pixels]
    else:
        shifted[..., :pixels] = images[..., -pixels:]
    return shifted
