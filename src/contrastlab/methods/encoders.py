"""The study's Siamese encoder: five bias-free convolutions to a 32-d sigmoid embedding."""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.infra.errors import FileError
from contrastlab.infra.files import RECOMPUTE, one_line, write_bytes

EMBEDDING_DIM = 32


class L2Normalize(nn.Module):
    """Scale each embedding to unit length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


# The last conv's 32 outputs are a linear projection; the head decides what is done with them.
# `sigmoid` (the protocol) squashes them into (0, 1): every embedding is non-negative, so the cosine
# similarity of any two is >= 0 and a cosine loss with margin 0 can never push negatives apart.
# `l2` keeps the projection and scales it to unit length instead.
HEADS = {"sigmoid": lambda: [nn.Sigmoid(), nn.Flatten()], "l2": lambda: [nn.Flatten(), L2Normalize()]}


def make_encoder(channels: int, head: str = "sigmoid") -> nn.Sequential:
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
        *HEADS[head](),
    )


def save_torch(obj: object, path: Path) -> None:
    """`torch.save`, atomically, through memory: a failed write (disk full) then names its cause,
    where torch itself reports only an "iostream error"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_encoder(encoder: nn.Module, channels: int, head: str, path: Path) -> None:
    """Weights plus what `make_encoder` needs to rebuild the network: plain tensors and values only."""
    save_torch({"state_dict": encoder.cpu().state_dict(), "channels": channels, "head": head}, path)


def load_encoder(path: Path, device: torch.device) -> nn.Sequential:
    """Rebuild a saved encoder. `weights_only=True`: a tampered file cannot run code when loaded."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        encoder = make_encoder(saved["channels"], saved["head"])
        encoder.load_state_dict(saved["state_dict"])
    except FileNotFoundError:
        raise FileError(f"{path} does not exist; run the train stage first (dvc repro)") from None
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in any way, always with this advice
        raise FileError(f"{path} is not a readable encoder ({one_line(err, 200)}); {RECOMPUTE}") from None
    return encoder.to(device)


def pick_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
