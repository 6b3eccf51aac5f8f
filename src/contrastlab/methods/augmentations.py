"""Batched image augmentations for contrastive training, as fast tensor ops instead of per-image PIL.

Each augmentation reproduces a torchvision PIL pipeline statistically: the same random parameter
ranges and probabilities, drawn independently for every sample of the batch from the generator
passed in, so a seeded generator reproduces a batch exactly. The work is done by a few batched
kernels (one `grid_sample` for all the geometry, per-sample blends for colour, one grouped
convolution for the blur) so that a fresh view every step costs far less than the training step.

Inputs are uint8 (B, C, H, W) with C = 1 or 3, on any device; outputs are float32 in [0, 1], not
normalised (see `normalize`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F

from contrastlab.pipeline.preprocess import to_unit

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
A = TypeVar("A", bound=Augmentation)  # `register` keeps a function's own signature (simclr's `scale`, `size`)

AUGMENTATIONS: dict[str, Augmentation] = {}

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")

ROTATION_DEGREES = (-15.0, 15.0)
# pad_rotate_scale crops 2S * 1.125 pixels out of an image resized to 2S, then resizes back to S.
ZOOM_OUT = 1.125

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop.get_params
FLIP_P = 0.5
SHIFT_FRACTION = 1 / 8  # shift_flip pads by S/8 (4 pixels at 32) and crops S back: CIFAR's standard augmentation
JITTER_P = 0.8
JITTER_STRENGTH = 0.8  # brightness, contrast and saturation factors in [1 - 0.8, 1 + 0.8]
HUE_SHIFT = 0.2  # hue shift in [-0.2, 0.2] of a full turn
GRAYSCALE_P = 0.2
BLUR_SIGMA = (0.1, 2.0)


def register(name: str) -> Callable[[A], A]:
    """Add an augmentation to `AUGMENTATIONS`, which is what params.yaml's `aug` is checked against."""

    def add(augmentation: A) -> A:
        AUGMENTATIONS[name] = augmentation
        return augmentation

    return add


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) so that one value scales one whole image."""
    return values.view(-1, 1, 1, 1)


# --- random parameters -------------------------------------------------------------------------


def sample_rotation_degrees(
    n: int, generator: torch.Generator, degrees: tuple[float, float] = ROTATION_DEGREES
) -> torch.Tensor:
    """One angle per sample, uniform on `degrees`, as RandomRotation.get_params."""
    return _uniform(n, degrees[0], degrees[1], generator)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> torch.Tensor:
    """Crop boxes as RandomResizedCrop.get_params, all samples at once.

    Returns an int64 (n, 4) tensor of (top, left, height, width). Each sample makes the same 10
    attempts (area fraction uniform on `scale`, aspect ratio log-uniform on `ratio`) and keeps the
    first that fits; a sample whose attempts all fail gets torchvision's centre-crop fallback.
    """
    device = generator.device
    area_fraction = torch.rand(n, CROP_ATTEMPTS, generator=generator, device=device)
    area_fraction = area_fraction * (scale[1] - scale[0]) + scale[0]
    log_ratio = torch.rand(n, CROP_ATTEMPTS, generator=generator, device=device)
    aspect = torch.exp(log_ratio * (math.log(ratio[1]) - math.log(ratio[0])) + math.log(ratio[0]))
    target_area = area_fraction * (height * width)
    # torch.round rounds half to even, like Python's round() in torchvision.
    crop_w = torch.round(torch.sqrt(target_area * aspect)).long()
    crop_h = torch.round(torch.sqrt(target_area / aspect)).long()
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first_fit = fits.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    crop_h = crop_h.gather(1, first_fit).squeeze(1)
    crop_w = crop_w.gather(1, first_fit).squeeze(1)

    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_h, fallback_w = int(round(width / min(ratio))), width
    elif in_ratio > max(ratio):
        fallback_h, fallback_w = height, int(round(height * max(ratio)))
    else:
        fallback_h, fallback_w = height, width
    found = fits.any(dim=1)
    crop_h = torch.where(found, crop_h, fallback_h)
    crop_w = torch.where(found, crop_w, fallback_w)

    # Offsets uniform over the positions that keep the box inside (float64, so that u * count
    # cannot round up to count); the fallback is centred.
    top = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    top = (top * (height - crop_h + 1)).long()
    left = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    left = (left * (width - crop_w + 1)).long()
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return torch.stack((top, left, crop_h, crop_w), dim=1)


# --- geometry ----------------------------------------------------------------------------------


def _pixel_centres(size: int, device: torch.device) -> torch.Tensor:
    """Pixel centres in grid_sample's normalised coordinates (align_corners=False)."""
    return (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1


def rotate_zoomed_out(x01: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (counter-clockwise, as torchvision) and zoom out by ZOOM_OUT
    about the centre, filling with black.

    That is what Resize(2S) -> Pad(18) -> RandomRotation -> CenterCrop(2S * 1.125) -> Resize(S)
    amounts to, except that at S = 28 torchvision's crop rounding shifts its output by 0.2 pixel.
    """
    _, _, height, width = x01.shape
    radians = torch.deg2rad(degrees.to(device=x01.device, dtype=torch.float32)).view(-1, 1, 1, 1)
    cos, sin = torch.cos(radians) * ZOOM_OUT, torch.sin(radians) * ZOOM_OUT
    xs = _pixel_centres(width, x01.device).view(1, 1, width, 1)
    ys = _pixel_centres(height, x01.device).view(1, height, 1, 1)
    # Output -> input map in coordinates normalised per axis (hence the aspect ratios), y down.
    # Built by broadcasting: F.affine_grid materialises a (B, H*W, 3) base grid and is slower.
    x_terms = torch.cat((cos, sin * (width / height)), dim=-1) * xs
    y_terms = torch.cat((-sin * (height / width), cos), dim=-1) * ys
    grid = x_terms + y_terms
    return F.grid_sample(x01, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resized_crop_flip(
    x01: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """Crop each image to its (top, left, height, width) box, resize it to `size` x `size` (None: back to full
    size), and mirror it left-right where `flip` is true: torchvision's resized_crop (bilinear) + hflip.

    The crop is axis-aligned, so its sampling grid is built per axis. Positions are clamped to
    the box's pixel centres so that, like PIL and F.interpolate, a box's edge rows are repeated
    rather than mixed with the pixels just outside it.
    """
    batch, _, height, width = x01.shape
    top, left, crop_h, crop_w = boxes.to(device=x01.device, dtype=torch.float32).unbind(dim=1)
    out_h, out_w = (height, width) if size is None else (size, size)

    def source_centres(out: int, size: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        # Output pixel i of `out` samples the box at start + (i + 0.5) * length / out - 0.5 (pixels of `size`).
        steps = torch.arange(out, device=x01.device, dtype=torch.float32) + 0.5
        position = start[:, None] + steps * (length / out)[:, None] - 0.5
        position = torch.minimum(torch.maximum(position, start[:, None]), (start + length - 1)[:, None])
        return (2 * position + 1) / size - 1

    grid_x = source_centres(out_w, width, left, crop_w)
    grid_x = torch.where(flip.to(x01.device)[:, None], grid_x.flip(1), grid_x)
    grid_y = source_centres(out_h, height, top, crop_h)
    shape = (batch, out_h, out_w)
    grid = torch.stack((grid_x[:, None, :].expand(shape), grid_y[:, :, None].expand(shape)), dim=-1)
    return F.grid_sample(x01, grid, mode="bilinear", padding_mode="border", align_corners=False)


def shifted_crop(x01: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad each image by `padding` pixels and crop its original size back at (top, left) of the padded
    image: torchvision's RandomCrop(S, padding), a whole-pixel shift; two gathers (rows, then columns) do the
    whole batch, 2x faster than one four-index lookup."""
    batch, channels, height, width = x01.shape
    padded = F.pad(x01, (padding,) * 4)
    rows = (top.to(x01.device)[:, None] + torch.arange(height, device=x01.device))[:, None, :, None]
    padded = padded.gather(2, rows.expand(batch, channels, height, width + 2 * padding))
    cols = (left.to(x01.device)[:, None] + torch.arange(width, device=x01.device))[:, None, None, :]
    return padded.gather(3, cols.expand(batch, channels, height, width))


# --- colour ------------------------------------------------------------------------------------


def to_grayscale(x01: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma; a 1-channel image is already its own grayscale."""
    if x01.shape[1] == 1:
        return x01
    red, green, blue = x01[:, 0:1], x01[:, 1:2], x01[:, 2:3]
    return (red * GRAY_WEIGHTS[0]).add_(green, alpha=GRAY_WEIGHTS[1]).add_(blue, alpha=GRAY_WEIGHTS[2])


def _blend(x01: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped, as PIL's ImageEnhance; one fused lerp."""
    return torch.lerp(other, x01, _per_sample(factor)).clamp_(0, 1)


def adjust_brightness(x01: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image by its factor (a blend with black)."""
    return (x01 * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x01: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with the mean of its own grayscale version."""
    mean_gray = to_grayscale(x01).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x01, mean_gray, factor)


def adjust_saturation(x01: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version; nothing to do on 1 channel, as torchvision."""
    if x01.shape[1] == 1:
        return x01
    return _blend(x01, to_grayscale(x01), factor)


def adjust_hue(x01: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by its shift (in turns) keeping saturation and value, as
    RGB -> HSV -> RGB does; nothing to do on 1 channel, as torchvision.

    Branch-free float arithmetic throughout: on CPU, comparisons, masks and torch.where cost
    several times more than a float op. HSV -> RGB uses the closed form
    channel = V - C * clamp(2 - |k - 2|, 0, 1), k = (H + n) mod 6, n = 5, 3, 1 for R, G, B.
    """
    if x01.shape[1] == 1:
        return x01
    red, green, blue = x01.unbind(dim=1)
    value = x01.amax(dim=1)
    chroma = value - x01.amin(dim=1)
    # 1.0 where that channel holds the maximum; ties go to red, then green, as in torchvision.
    red_max = 1 - torch.sign(value - red)
    green_max = (1 - torch.sign(value - green)) * (1 - red_max)
    blue_max = 1 - red_max - green_max
    # Hue in sixths of a turn (red 0, green 2, blue 4), shifted, then wrapped into [0, 6).
    hue = red_max * (green - blue)
    hue += green_max * (blue - red + 2 * chroma)
    hue += blue_max * (red - green + 4 * chroma)
    hue /= chroma.clamp_min(1e-12)  # gray pixels: 0 / tiny = 0
    hue += 6 * shift.view(-1, 1, 1)
    hue -= 6 * torch.floor(hue / 6)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = hue + offset  # in [1, 11], so the triangle wave's nearest peak is at 2 or 8
        peak_distance = torch.minimum((k - 2).abs_(), k.sub_(8).abs_())
        channels.append(value - chroma * (2 - peak_distance).clamp_(0, 1))
    return torch.stack(channels, dim=1)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # torchvision's indices


class JitterParams(NamedTuple):
    """One sample per row: whether ColorJitter applies, its four factors, and its op order."""

    applied: torch.Tensor  # (n,) bool
    factors: torch.Tensor  # (n, 4): brightness, contrast, saturation, hue shift
    order: torch.Tensor  # (n, 4): a permutation of the indices into JITTER_OPS


def sample_jitter_params(n: int, generator: torch.Generator, p: float = JITTER_P) -> JitterParams:
    """RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p) draws, with a fresh op order per sample
    as torchvision draws one per call."""
    device = generator.device
    applied = torch.rand(n, generator=generator, device=device) < p
    strength = torch.tensor([JITTER_STRENGTH] * 3 + [HUE_SHIFT], device=device)
    centre = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device)
    factors = centre + strength * (2 * torch.rand(n, 4, generator=generator, device=device) - 1)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    return JitterParams(applied, factors, order)


def color_jitter_(x01: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Jitter each sample in its own op order, in place (the pipeline owns the buffer).

    Loops over the 4 slots of the order: at each slot every op runs once, on the jittered
    samples that have it in that slot, gathered with index_select and written back with
    index_copy_ (plain indexing is 5x slower on CPU). Saturation and hue are skipped on
    1-channel images, where they do nothing.
    """
    ops = JITTER_OPS if x01.shape[1] == 3 else JITTER_OPS[:2]
    for slot in range(4):
        for op_index, op in enumerate(ops):
            chosen = (params.applied & (params.order[:, slot] == op_index)).nonzero().squeeze(1)
            if chosen.numel():
                jittered = op(x01.index_select(0, chosen), params.factors[chosen, op_index])
                x01.index_copy_(0, chosen, jittered)
    return x01


def grayscale_(x01: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Make the chosen RGB images gray in all three channels, in place, as RandomGrayscale does."""
    indices = chosen.nonzero().squeeze(1)
    if x01.shape[1] == 3 and indices.numel():
        x01.index_copy_(0, indices, to_grayscale(x01.index_select(0, indices)).expand(-1, 3, -1, -1))
    return x01


# --- blur --------------------------------------------------------------------------------------


def sample_blur_sigma(n: int, generator: torch.Generator) -> torch.Tensor:
    """One sigma per sample, uniform on BLUR_SIGMA, as GaussianBlur.get_params."""
    return _uniform(n, BLUR_SIGMA[0], BLUR_SIGMA[1], generator)


def gaussian_blur3(x01: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian blur with one sigma per image and reflect padding, as torchvision's
    GaussianBlur(3): every image is its own group of one grouped convolution."""
    batch, channels, height, width = x01.shape
    offsets = torch.tensor([-1.0, 0.0, 1.0], device=x01.device)
    kernel_1d = torch.exp(-0.5 * (offsets / sigma.to(x01.device).view(-1, 1)) ** 2)
    kernel_1d = kernel_1d / kernel_1d.sum(dim=1, keepdim=True)
    kernel_2d = kernel_1d[:, :, None] * kernel_1d[:, None, :]
    weight = kernel_2d.repeat_interleave(channels, dim=0).unsqueeze(1)
    padded = F.pad(x01.reshape(1, batch * channels, height, width), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, weight, groups=batch * channels).view(batch, channels, height, width)


# --- registered augmentations ------------------------------------------------------------------


@register("none")
def no_augmentation(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The image as it is, for the baseline without augmentation."""
    return to_unit(x)


@register("pad_rotate_scale")
def pad_rotate_scale(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Resize(2S) -> Pad(18) -> RandomRotation(15) -> CenterCrop(2S * 1.125) -> Resize(S)."""
    degrees = sample_rotation_degrees(x.shape[0], generator)
    # Bilinear weights can overshoot 1 by a rounding error; the contract is [0, 1].
    return rotate_zoomed_out(to_unit(x), degrees).clamp_(0, 1)


@register("simclr")
def simclr(
    x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = CROP_SCALE, size: int | None = None
) -> torch.Tensor:
    """SimCLR's view: RandomResizedCrop -> HorizontalFlip -> RandomApply(ColorJitter, 0.8) ->
    RandomGrayscale(0.2) -> GaussianBlur(3, sigma in [0.1, 2]). The crop covers `scale` of the image's area and is
    resized to `size` x `size` pixels (None: the image's own size)."""
    batch, _, height, width = x.shape
    boxes = sample_crop_boxes(batch, height, width, generator, scale=scale)
    flip = torch.rand(batch, generator=generator, device=x.device) < FLIP_P
    views = resized_crop_flip(to_unit(x), boxes, flip, size)
    color_jitter_(views, sample_jitter_params(batch, generator))
    grayscale_(views, torch.rand(batch, generator=generator, device=x.device) < GRAYSCALE_P)
    # The blur's normalised kernel can overshoot 1 by a rounding error; the contract is [0, 1].
    return gaussian_blur3(views, sample_blur_sigma(batch, generator)).clamp_(0, 1)


SMALL_CROP_SCALE = (0.05, 0.4)  # of the image's area: SwAV's small crops (0.05-0.14 on ImageNet), wider for 32 pixels


def small_crops(x: torch.Tensor, generator: torch.Generator, count: int, size: int) -> torch.Tensor:
    """Multi-crop's local views (Caron et al. 2020): `count` SimCLR views of small parts of each image at `size` x
    `size` pixels, crop after crop: (count * B, C, size, size), the first B the first crop of every image."""
    return simclr(x.repeat(count, 1, 1, 1), generator, scale=SMALL_CROP_SCALE, size=size)


@register("shift_flip")
def shift_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandomCrop(S, padding=S/8) -> RandomHorizontalFlip: the standard supervised CIFAR augmentation."""
    batch, _, height, width = x.shape
    padding = round(min(height, width) * SHIFT_FRACTION)
    top = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (batch,), generator=generator, device=x.device)
    flip = torch.rand(batch, generator=generator, device=x.device) < FLIP_P
    views = shifted_crop(to_unit(x), top, left, padding)
    return torch.where(_per_sample(flip), views.flip(-1), views)
