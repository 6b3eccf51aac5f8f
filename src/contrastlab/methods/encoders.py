"""Encoders by name (`model.arch`): a backbone (the hidden layers) and a projection to the embedding
the loss sees, ending in a head. The probe reads either the embedding or the backbone's features.

- `study`: the protocol's Siamese encoder, five bias-free convolutions to a 32-d embedding, layer for layer.
- `vgg_small`: 3x3 convolutions with BatchNorm and max-pooling (widths 32-64-128-256), global average
  pooling to 256 features, and a SimCLR-style MLP projection (256 -> 256 -> `model.embedding_dim`):
  2.6x the study encoder's parameters, 5.4x its FLOP per CIFAR-10 image (what that costs: BENCHMARKS.md).
- `airbench`: airbench94's design (Jordan 2024) at a width for two CPU cores: a frozen 2x2 patch-whitening
  convolution set from training images alone (no labels), then three groups of two 3x3 convolutions with a
  max-pool, BatchNorm and GELU (widths 64-128-256), global max-pooling to 256 features, the same MLP projection.
  `airbench_small`: widths 32-64-256, about 0.6x the FLOP.

Activations work in place (the layers before them do not need their outputs for the backward pass): one
memory pass less per layer, the same numbers.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.infra.errors import FileError
from contrastlab.infra.files import one_line, recompute_advice, write_bytes

EMBEDDING_DIM = 32  # the study's


class L2Normalize(nn.Module):
    """Scale each embedding to unit length."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


# The projection's last layer is linear; the head decides what is done with its outputs.
# `sigmoid` (the protocol) squashes them into (0, 1): every embedding is non-negative, so the cosine
# similarity of any two is >= 0 and a cosine loss with margin 0 can never push negatives apart.
# `l2` keeps the projection and scales it to unit length instead; `linear` keeps it as it is (VICReg's and Barlow
# Twins' losses standardise or spread the coordinates themselves).
HEADS: dict[str, Callable[[], list[nn.Module]]] = {
    "sigmoid": lambda: [nn.Sigmoid(), nn.Flatten()],
    "l2": lambda: [nn.Flatten(), L2Normalize()],
    "linear": lambda: [nn.Flatten()],
}


class Encoder(nn.Module):
    """backbone -> projection (ending in the head). `features` is what the probe reads with
    `probe.features: backbone`: the backbone's last feature map averaged over its positions."""

    def __init__(self, backbone: nn.Module, projection: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.backbone(x))

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both representations of `x` from one pass: {"embedding": ..., "backbone": ...}."""
        hidden = self.backbone(x)
        pooled = hidden.mean(dim=(2, 3)) if hidden.dim() == 4 else hidden
        return {"embedding": self.projection(hidden), "backbone": pooled}


def _patches(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The non-overlapping 2x2 patches of `x`'s top-left 2*rows x 2*cols pixels, one row per output position
    and (kernel row, kernel column, channel) along it: [N * rows * cols, 4 * C]."""
    n, c = x.shape[:2]
    x = x[:, :, : 2 * rows, : 2 * cols].permute(0, 2, 3, 1)
    return x.reshape(n, rows, 2, cols, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4 * c)


def _unpatch(patches: torch.Tensor, n: int, rows: int, cols: int) -> torch.Tensor:
    """`_patches` undone: [N * rows * cols, 4 * C] back to the [N, C, 2*rows, 2*cols] image they cover."""
    c = patches.shape[1] // 4
    x = patches.reshape(n, rows, cols, 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * rows, 2 * cols, c)
    return x.permute(0, 3, 1, 2)


class _MatmulBackwardConv(torch.autograd.Function):
    """conv2d(x, weight, stride=2, padding=1) for a 2x2 kernel, its backward pass as two matrix products over
    the non-overlapping patches: oneDNN's bf16 backward kernels for this shape gain little over fp32."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, stride=2, padding=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        n, c, height, width = x.shape
        outputs, rows, cols = grad.shape[1:]
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, outputs)  # [N * rows * cols, outputs]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # not for the first layer, whose input is the images
            kernel = weight.permute(0, 2, 3, 1).reshape(outputs, 4 * c)  # in the patches' order
            # drop the padding; with an odd size the last padding row and column lie past the last whole patch
            grad_x = F.pad(
                _unpatch(grad_rows @ kernel, n, rows, cols), (-1, width + 1 - 2 * cols, -1, height + 1 - 2 * rows)
            )
        if ctx.needs_input_grad[1]:
            patches = _patches(F.pad(x, (1, 1, 1, 1)), rows, cols)
            grad_weight = (grad_rows.t() @ patches).reshape(outputs, 2, 2, c).permute(0, 3, 1, 2)
        return grad_x, grad_weight


class StridedConv2x2(nn.Conv2d):
    """The study's 2x2, stride-2, padding-1 convolution without bias: nn.Conv2d's parameters and function.
    Under CPU bf16 autocast its backward pass runs as matrix products where that measured faster
    (`matmul_backward`: from 64 input channels, 1.1-1.7x; below, oneDNN's own backward is as fast or faster:
    BENCHMARKS.md)."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__(inputs, outputs, kernel_size=2, stride=2, padding=1, bias=False)
        self.matmul_backward = inputs >= 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.matmul_backward
            or x.device.type != "cpu"
            or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16
        ):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            return _MatmulBackwardConv.apply(x.to(torch.bfloat16), self.weight.to(torch.bfloat16))


def study(channels: int, embedding_dim: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """The protocol's encoder (about 181k parameters for any input size 28-32): four strided 2x2
    convolutions to a 256 x 3 x 3 map, then a 2x2 convolution to 8 x 2 x 2 = 32 outputs."""
    backbone = [StridedConv2x2(channels, 32), nn.LeakyReLU(0.2, inplace=True)]
    for width in (64, 128, 256):
        backbone += [StridedConv2x2(width // 2, width), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, inplace=True)]
    return backbone, [nn.Conv2d(256, 8, kernel_size=2, stride=1, padding=0, bias=False)]


def conv_bn_relu(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    ]


def mlp_projection(features: int, embedding_dim: int) -> list[nn.Module]:
    """SimCLR's projection, its hidden layer as wide as the embedding where that is wider (VICReg's expander)."""
    hidden = max(features, embedding_dim)
    return [
        nn.Linear(features, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, embedding_dim),
    ]


class SpatialMean(nn.Module):
    """Global average pooling as a mean over height and width: the same numbers as AdaptiveAvgPool2d(1) on the CPU,
    and a backward that CUDA computes deterministically (adaptive pooling's backward has no deterministic kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class SpatialMax(nn.Module):
    """Global max pooling over height and width: the same numbers and gradients (to the first maximum) as
    AdaptiveMaxPool2d(1) on the CPU, and a backward that CUDA computes deterministically (a scatter, where
    adaptive max pooling's backward has no deterministic kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # over the positions of a channels-last (N, H, W, C) view: the gradient comes back channels-last, as
        # adaptive pooling's does, so the layers before it compute their backward in the same order
        return x.permute(0, 2, 3, 1).flatten(1, 2).max(dim=1).values[..., None, None]


def vgg_small(channels: int, embedding_dim: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """3x3 convolutions at full resolution and after each of three 2x2 max-pools (about 0.46M parameters
    with a 32-d embedding); the MLP projection as in SimCLR, so the backbone's 256 features are the
    representation and the projection is free to discard what the loss does not need."""
    backbone = conv_bn_relu(channels, 32)
    for width in (64, 128, 256):
        backbone += [nn.MaxPool2d(2), *conv_bn_relu(width // 2, width)]
    backbone += [SpatialMean(), nn.Flatten()]
    return backbone, mlp_projection(256, embedding_dim)


WHITENING_EPS = (
    5e-4  # added to the patch covariance's eigenvalues (airbench's), so near-constant directions stay finite
)
WHITENING_IMAGES = 5000  # training images whose patches set the whitening: the statistics settle well before


class PatchWhitening(nn.Conv2d):
    """A k x k convolution whose filters whiten the images' k x k patches: the eigenvectors of their covariance over
    the square root of the eigenvalues, each also negated (so a ReLU-like activation after it loses nothing). Set
    from training images by `fit` (never from the images it is scored on); frozen, its bias included."""

    def __init__(self, channels: int, size: int = 2):
        super().__init__(channels, 2 * channels * size * size, kernel_size=size, bias=True)
        assert self.bias is not None  # bias=True
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from `images`, normalised (N, C, H, W) float training images."""
        c, size = self.in_channels, self.kernel_size[0]
        patches = F.unfold(images.double(), size).transpose(1, 2).reshape(-1, c * size * size)
        patches = patches - patches.mean(dim=0)
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        filters = (eigenvectors.T / (eigenvalues + WHITENING_EPS).sqrt()[:, None]).reshape(-1, c, size, size)
        assert self.bias is not None  # bias=True
        self.weight.copy_(torch.cat([filters, -filters]).float())
        self.bias.zero_()


def conv_group(inputs: int, outputs: int) -> list[nn.Module]:
    """airbench's group: conv 3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv 3x3 -> BatchNorm -> GELU."""
    return [
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(outputs),
        nn.GELU(),
        nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.GELU(),
    ]


def airbench(
    channels: int, embedding_dim: int, widths: tuple[int, int, int] = (64, 128, 256)
) -> tuple[list[nn.Module], list[nn.Module]]:
    """Patch whitening (2x2: 8 or 24 filters), then three conv groups of `widths`; max-pooled to 256 features."""
    whitening = PatchWhitening(channels)
    backbone = [whitening, nn.GELU()]
    inputs = whitening.out_channels
    for width in widths:
        backbone += conv_group(inputs, width)
        inputs = width
    backbone += [SpatialMax(), nn.Flatten()]
    return backbone, mlp_projection(widths[-1], embedding_dim)


def airbench_small(channels: int, embedding_dim: int) -> tuple[list[nn.Module], list[nn.Module]]:
    return airbench(channels, embedding_dim, widths=(32, 64, 256))


@dataclass(frozen=True)
class Arch:
    layers: Callable[[int, int], tuple[list[nn.Module], list[nn.Module]]]  # (channels, embedding_dim) -> layers
    embedding_dim: int | None  # the only size it can embed to, or None when `model.embedding_dim` chooses
    any_size: bool = True  # pools globally, so images of any size (multi-crop's small crops) embed alike


ARCHS: dict[str, Arch] = {
    "study": Arch(study, EMBEDDING_DIM, any_size=False),  # its last layer reads a 3 x 3 map
    "vgg_small": Arch(vgg_small, None),
    "airbench": Arch(airbench, None),
    "airbench_small": Arch(airbench_small, None),
}


def make_encoder(
    channels: int, head: str = "sigmoid", arch: str = "study", embedding_dim: int = EMBEDDING_DIM
) -> Encoder:
    """A freshly initialised encoder (initialised from torch's global generator, in layer order)."""
    backbone, projection = ARCHS[arch].layers(channels, embedding_dim)
    return Encoder(nn.Sequential(*backbone), nn.Sequential(*projection, *HEADS[head]()))


def whitening_layers(encoder: nn.Module) -> list[PatchWhitening]:
    """The layers set from training-image statistics before training (`PatchWhitening.fit`)."""
    return [layer for layer in encoder.modules() if isinstance(layer, PatchWhitening)]


def save_torch(obj: object, path: Path) -> None:
    """`torch.save`, atomically, through memory: a failed write (disk full) then names its cause,
    where torch itself reports only an "iostream error"."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and bytes, in name order.

    torch.load checks no checksum: bytes flipped inside a saved tensor load as other weights, silently.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        # ignored: an ndarray is a buffer, but numpy's stubs give it `__buffer__` only for Python >= 3.12
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]
    return digest.hexdigest()


def save_encoder(encoder: nn.Module, design: dict, path: Path) -> None:
    """Weights plus `design`, the keyword arguments of `make_encoder` that rebuild the network
    (channels, head, arch, embedding_dim), plus the weights' digest: plain tensors and values only."""
    state_dict = encoder.cpu().state_dict()
    save_torch({"state_dict": state_dict, "design": design, "weights_sha256": weights_digest(state_dict)}, path)


def _check_weights(path: Path, saved: dict) -> None:
    """An encoder saved before the digest existed has none and is taken as it is: refusing it would make
    every earlier result in DVC's cache and in the study unusable."""
    if "weights_sha256" in saved and saved["weights_sha256"] != weights_digest(saved["state_dict"]):
        raise FileError(
            f"{path} is damaged: its weights do not match the digest saved with them; {recompute_advice(path)}"
        )


def _refused(path: Path) -> FileError:
    """torch refused to unpickle something a weights file never holds (code, arbitrary objects). Its own
    message advises loading with `weights_only=False`, which would run it: that advice is never passed on."""
    try:
        found = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))  # read, never run
    except Exception:  # noqa: BLE001 - a pickle too damaged to read has nothing to name
        found = []
    what = f"it refers to {', '.join(found)}" if found else "a pickle torch's safe loader does not accept"
    return FileError(
        f"{path} holds something other than plain weights ({what}): it was refused and nothing in it "
        f"was run; {recompute_advice(path)}"
    )


def load_encoder(path: Path, device: torch.device) -> Encoder:
    """Rebuild a saved encoder. `weights_only=True`: a tampered file cannot run code when loaded; and the
    weights must match the digest saved with them (an encoder saved before there was one loads unchecked)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        _check_weights(path, saved)
        encoder = make_encoder(**saved["design"])
        encoder.load_state_dict(saved["state_dict"])
    except FileError:
        raise
    except FileNotFoundError:
        raise FileError(f"{path} does not exist; run the train stage first (dvc repro)") from None
    except pickle.UnpicklingError:
        raise _refused(path) from None
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in any way, always with this advice
        advice = recompute_advice(path)
        raise FileError(f"{path} is not a readable encoder ({one_line(err, 200)}); {advice}") from None
    return encoder.to(device)
