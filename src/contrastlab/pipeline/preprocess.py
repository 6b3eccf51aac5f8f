"""How uint8 images become the encoder's input, the same in training, embedding and the baselines."""

from __future__ import annotations

import torch


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [0, 1], bit for bit as torchvision's ToTensor, in one pass."""
    return x_uint8 / 255


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] to [-1, 1], as Normalize(mean=0.5, std=0.5) on every channel."""
    return (x01 - 0.5) / 0.5
