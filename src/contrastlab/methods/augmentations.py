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


def _replace_(x01: torch.Tensor, other: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Replace the chosen images of x01 by other's, in place, with no data-dependent shape: a lerp by 0 or 1 keeps
    one side bit for bit, and on CPU runs 3x faster than torch.where."""
    return x01.lerp_(other, _per_sample(chosen.to(x01.dtype)))


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

    Branch-free float arithmetic throughout, in place where it can be: on CPU, comparisons, masks and torch.where cost
    several times more than a float op, and a fresh buffer about as much as one. HSV -> RGB uses the closed form
    channel = V - C * clamp(2 - |k - 2|, 0, 1), k = (H + n) mod 6, n = 5, 3, 1 for R, G, B.
    """
    if x01.shape[1] == 1:
        return x01
    red, green, blue = x01.unbind(dim=1)
    value = x01.amax(dim=1)
    chroma = value - x01.amin(dim=1)
    # Hue in sixths of a turn (red 0, green 2, blue 4) from the channel that holds the maximum, ties going to red, then
    # green, as in torchvision: sign(value - channel) is 0 there and 1 elsewhere, and a lerp by 0 or 1 picks exactly.
    hue = torch.lerp((blue - red).add_(chroma, alpha=2), (red - green).add_(chroma, alpha=4), (value - green).sign_())
    hue = torch.lerp(green - blue, hue, (value - red).sign_())
    hue /= chroma.clamp_min(1e-12)  # gray pixels: 0 / tiny = 0
    hue += 6 * shift.view(-1, 1, 1)
    hue -= (hue / 6).floor_().mul_(6)  # wrapped into [0, 6]
    out, k = torch.empty_like(x01), torch.empty_like(hue)
    for channel, offset in zip(out.unbind(dim=1), (5.0, 3.0, 1.0), strict=True):
        # k is in [1, 11], where clamp(||k - 5| - 3| - 2, -1, 0) is bit for bit minus the clamp above, taken of k's
        # distance to the nearest peak (2 or 8): checked for every float32 k.
        torch.add(hue, offset, out=k).sub_(5).abs_().sub_(3).abs_().sub_(2).clamp_(-1, 0)
        torch.add(value, k.mul_(chroma), out=channel)
    return out


BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision's op indices: JitterParams' factor columns and orders


class JitterParams(NamedTuple):
    """One sample per row: whether ColorJitter applies, its four factors, and its op order."""

    applied: torch.Tensor  # (n,) bool
    factors: torch.Tensor  # (n, 4): brightness, contrast, saturation, hue shift
    order: torch.Tensor  # (n, 4): a permutation of BRIGHTNESS, CONTRAST, SATURATION, HUE


def sample_jitter_params(n: int, generator: torch.Generator, p: float = JITTER_P) -> JitterParams:
    """RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p) draws, with a fresh op order per sample
    as torchvision draws one per call."""
    device = generator.device
    applied = torch.rand(n, generator=generator, device=device) < p
    # Python scalars rather than constant tensors: building a tensor would copy it to the device every call.
    spread = 2 * torch.rand(n, 4, generator=generator, device=device) - 1
    factors = torch.cat((1 + JITTER_STRENGTH * spread[:, :HUE], HUE_SHIFT * spread[:, HUE:]), dim=1)
    order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
    return JitterParams(applied, factors, order)


def _blend_step_(x01: torch.Tensor, op: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast or saturation, whichever `op` names for each image (-1: none), in one step, in place, bit
    for bit as adjust_brightness, adjust_contrast or adjust_saturation would do it to that image alone.

    Each of the three is x * scale lerped from another image by a weight, then clamped: brightness scales (weight 1),
    contrast and saturation lerp from the gray mean or the gray image (scale 1). An image that takes none keeps its
    values bit for bit: x * 1, lerp weight 1, and no clamp.
    """
    gray = to_grayscale(x01)
    # The gray image, or its mean for contrast: 1 * gray + 0 * mean or 0 * gray + 1 * mean, exact, and on CPU faster
    # than torch.where with a per-image condition.
    contrast = _per_sample(op == CONTRAST).to(x01.dtype)
    other = (gray * (1 - contrast)).add_(gray.mean(dim=(1, 2, 3), keepdim=True) * contrast)
    x01.mul_(_per_sample(torch.where(op == BRIGHTNESS, factor, 1.0)))
    torch.lerp(other, x01, _per_sample(torch.where(op > BRIGHTNESS, factor, 1.0)), out=x01)
    changed = _per_sample(op >= 0)
    return x01.clamp_min_(torch.where(changed, 0.0, -math.inf)).clamp_max_(torch.where(changed, 1.0, math.inf))


def color_jitter_(x01: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Jitter each sample in its own op order, in place (the pipeline owns the buffer).

    Every step runs on the whole batch with per-image factors: no shape depends on the draws, so a GPU never makes
    the host wait. An image's ops start `delay` steps late, so that each step is either one hue or one fused blend.
    """
    hue_step: int | None
    if x01.shape[1] == 3:
        # Hue costs several blends, so every image takes it at step 3: 3 - (hue's slot) steps late, over 7 steps.
        sequence, hue_step, steps = params.order, 3, 7
        delay = hue_step - (params.order == HUE).int().argmax(dim=1)
    else:
        # Saturation and hue do nothing on 1 channel: each image takes its brightness and contrast, in its order (a
        # stable sort moves the other two to the end), in two steps.
        relevant_first = (params.order > CONTRAST).int().argsort(dim=1, stable=True)
        sequence, hue_step, steps = params.order.gather(1, relevant_first[:, :2]), None, 2
        delay = torch.zeros_like(params.order[:, 0])
    # Row s: the op each image takes at step s (-1: none), and its factor.
    index = torch.arange(steps, device=x01.device)[:, None] - delay
    takes = params.applied & (index >= 0) & (index < sequence.shape[1])
    ops = torch.where(takes, sequence.gather(1, index.clamp(0, sequence.shape[1] - 1).T).T, -1)
    factors = params.factors.gather(1, ops.clamp_min(0).T).T
    for step, (op, factor) in enumerate(zip(ops, factors, strict=True)):
        if step == hue_step:
            _replace_(x01, adjust_hue(x01, params.factors[:, HUE]), takes[step])
        else:
            _blend_step_(x01, op, factor)
    return x01


def grayscale_(x01: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Make the chosen RGB images gray in all three channels, in place, as RandomGrayscale does."""
    if x01.shape[1] == 3:
        _replace_(x01, to_grayscale(x01), chosen)
    return x01


# --- blur --------------------------------------------------------------------------------------


def sample_blur_sigma(n: int, generator: torch.Generator) -> torch.Tensor:
    """One sigma per sample, uniform on BLUR_SIGMA, as GaussianBlur.get_params."""
    return _uniform(n, BLUR_SIGMA[0], BLUR_SIGMA[1], generator)


def gaussian_blur3(x01: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian blur with one sigma per image and reflect padding, as torchvision's
    GaussianBlur(3): every image is its own group of one grouped convolution."""
    batch, channels, height, width = x01.shape
    offsets = torch.arange(-1.0, 2.0, device=x01.device)  # not torch.tensor: a copy to the device every call
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
