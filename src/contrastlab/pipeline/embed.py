"""Embed the test images with a trained encoder (its embedding and its backbone's features), also shifted
sideways for the probe's robustness scores."""

from __future__ import annotations

import numpy as np
import torch

from contrastlab.infra.errors import TrainingDiverged
from contrastlab.methods.encoders import Encoder
from contrastlab.pipeline.preprocess import normalize, to_unit


@torch.no_grad()
def embed_images(encoder: Encoder, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Both representations of uint8 (N, C, H, W) images, {"embedding": ..., "backbone": ...}, in eval
    mode (BatchNorm uses its running statistics)."""
    device = next(encoder.parameters()).device
    encoder.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        for name, out in encoder.embed(normalize(to_unit(batch))).items():
            chunks.setdefault(name, []).append(out.float().cpu())
    return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}


def stop_if_outputs_not_finite(arrays: dict[str, np.ndarray], images: str) -> None:
    """Outputs with NaN or infinite values (an encoder whose finite weights are too large) stop the stage, naming
    the first such array: `images` says of what ("test images")."""
    for name, array in arrays.items():
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise TrainingDiverged(
                f"training diverged: the encoder's {name} outputs for the {images} are not finite "
                f"({bad} of {array.size} values are NaN or infinite); lower train.lr or change "
                "the recipe"
            )


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
