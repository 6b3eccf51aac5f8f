"""Batched image augmentations for contrastive training, as fast tensor ops instead of per-image PIL.

Each augmentation reproduces a torchvision PIL pipeline statistically: the same random parameter
ranges and probabilities, drawn independently for every sample of the batch from the generator
passed in, so a seeded generator reproduces a batch exactly. The work is done by a few batched
kernels (one `grid_sample` for all the geometry, masked blends for colour, one grouped convolution
for the blur) so that augmenting a fresh view every step costs far less than the training step.

Inputs are uint8 (B, C, H, W) with C = 1 or 3, on any device; outputs are float32 in [0, 1], not
normalised (see `normalize`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

AUGMENTATIONS: dict[str, Augmentation] = {}

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")

ROTATION_DEGREES = (-15.0, 15.0)
# pad_rotate_scale crops 2S * 1.125 pixels out of an image resized to 2S, then resizes back to S.
ZOOM_OUT = 1.125

CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop.get_params
FLIP_P = 0.5
JITTER_P = 0.8
JITTER_STRENGTH = 0.8  # brightness, contrast and saturation factors in [1 - 0.8, 1 + 0.8]
HUE_SHIFT = 0.2  # hue shift in [-0.2, 0.2] of a full turn
GRAYSCALE_P = 0.2
BLUR_SIGMA = (0.1, 2.0)


def register(name: str) -> Callable[[Augmentation], Augmentation]:
    """Add an augmentation to `AUGMENTATIONS`, which is what params.yaml's `aug` is checked against."""

    def add(augmentation: Augmentation) -> Augmentation:
        AUGMENTATIONS[name] = augmentation
        return augmentation

    return add


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [0, 1], bit for bit as torchvision's ToTensor."""
    return x_uint8.float().div_(255)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[0, 1] to [-1, 1], as Normalize(mean=0.5, std=0.5) on every channel."""
    return (x01 - 0.5) / 0.5


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

    # Offsets uniform over the positions that keep the box inside; the fallback is centred.
    top = (torch.rand(n, generator=generator, device=device) * (height - crop_h + 1)).long()
    left = (torch.rand(n, generator=generator, device=device) * (width - crop_w + 1)).long()
    top = torch.where(found, top, (height - fallback_h) // 2)
    left = torch.where(found, left, (width - fallback_w) // 2)
    return torch.stack((top, left, crop_h, crop_w), dim=1)


# --- geometry ----------------------------------------------------------------------------------


def rotate_zoomed_out(x01: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (counter-clockwise, as torchvision) and zoom out by ZOOM_OUT.

    Both happen about the image centre and uncovered pixels are black, which is what
    Resize(2S) -> Pad(18) -> RandomRotation -> CenterCrop(2S * 1.125) -> Resize(S) amounts to.
    """
    batch, _, height, width = x01.shape
    radians = torch.deg2rad(degrees.to(device=x01.device, dtype=torch.float32))
    cos, sin = torch.cos(radians) * ZOOM_OUT, torch.sin(radians) * ZOOM_OUT
    # affine_grid maps output to input in coordinates normalised per axis, so the rotation's
    # off-diagonal terms carry the aspect ratio; y points down, hence the signs.
    theta = torch.zeros(batch, 2, 3, device=x01.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (height / width)
    theta[:, 1, 0] = sin * (width / height)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
    return F.grid_sample(x01, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def resized_crop_flip(x01: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Crop each image to its (top, left, height, width) box, resize it back to full size, and
    mirror it left-right where `flip` is true: torchvision's resized_crop (bilinear) + hflip.

    Sampling positions are clamped to the box's pixel centres so that, like PIL and
    F.interpolate, the edge rows of a box are repeated rather than mixed with pixels outside it.
    """
    batch, _, height, width = x01.shape
    top, left, crop_h, crop_w = boxes.to(device=x01.device, dtype=torch.float32).unbind(dim=1)
    mirror = torch.where(flip.to(x01.device), -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=x01.device)
    theta[:, 0, 0] = crop_w / width * mirror
    theta[:, 0, 2] = (2 * left + crop_w) / width - 1
    theta[:, 1, 1] = crop_h / height
    theta[:, 1, 2] = (2 * top + crop_h) / height - 1
    grid = F.affine_grid(theta, list(x01.shape), align_corners=False)
    x_min, x_max = (2 * left + 1) / width - 1, (2 * (left + crop_w) - 1) / width - 1
    y_min, y_max = (2 * top + 1) / height - 1, (2 * (top + crop_h) - 1) / height - 1
    grid[..., 0].clamp_(x_min.view(-1, 1, 1), x_max.view(-1, 1, 1))
    grid[..., 1].clamp_(y_min.view(-1, 1, 1), y_max.view(-1, 1, 1))
    return F.grid_sample(x01, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --- colour ------------------------------------------------------------------------------------


def to_grayscale(x01: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma; a 1-channel image is already its own grayscale."""
    if x01.shape[1] == 1:
        return x01
    red, green, blue = x01[:, 0:1], x01[:, 1:2], x01[:, 2:3]
    return (red * GRAY_WEIGHTS[0]).add_(green, alpha=GRAY_WEIGHTS[1]).add_(blue, alpha=GRAY_WEIGHTS[2])


def _blend(x01: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other, clamped, as PIL's ImageEnhance."""
    factor = _per_sample(factor)
    return (x01 * factor).add_(other * (1 - factor)).clamp_(0, 1)


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

    Uses the closed form of HSV -> RGB, channel = V - C * clamp(min(k, 4 - k), 0, 1) with
    k = (n + 6 H) mod 6 and n = 5, 3, 1 for R, G, B, which avoids a six-way case split.
    """
    if x01.shape[1] == 1:
        return x01
    red, green, blue = x01.unbind(dim=1)
    value = x01.amax(dim=1)
    chroma = value - x01.amin(dim=1)
    safe_chroma = torch.where(chroma > 0, chroma, 1.0)
    # Hue in sixths of a turn; ties go to red, then green, as torchvision's _rgb2hsv.
    hue_sixths = torch.where(
        value == red,
        (green - blue) / safe_chroma,
        torch.where(value == green, 2 + (blue - red) / safe_chroma, 4 + (red - green) / safe_chroma),
    )
    hue_sixths += 6 * shift.view(-1, 1, 1)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = torch.remainder(hue_sixths + offset, 6)
        channels.append(value - chroma * torch.minimum(k, 4 - k).clamp_(0, 1))
    return torch.stack(channels, dim=1)


def color_jitter(x01: torch.Tensor, generator: torch.Generator, apply_p: float = JITTER_P) -> torch.Tensor:
    """RandomApply([ColorJitter(0.8, 0.8, 0.8, 0.2)], p) with parameters and op order per sample.

    Loops over the 4 slots of each sample's random order: at each slot every op runs once, on
    the jittered samples that have it in that slot.
    """
    batch, device = x01.shape[0], x01.device
    applied = torch.rand(batch, generator=generator, device=device) < apply_p
    low, high = 1 - JITTER_STRENGTH, 1 + JITTER_STRENGTH
    brightness = _uniform(batch, low, high, generator)
    contrast = _uniform(batch, low, high, generator)
    saturation = _uniform(batch, low, high, generator)
    hue = _uniform(batch, -HUE_SHIFT, HUE_SHIFT, generator)
    order = torch.rand(batch, 4, generator=generator, device=device).argsort(dim=1)
    ops = [(adjust_brightness, brightness), (adjust_contrast, contrast)]
    if x01.shape[1] == 3:
        ops += [(adjust_saturation, saturation), (adjust_hue, hue)]
    for slot in range(4):
        for op_index, (op, factors) in enumerate(ops):
            chosen = (applied & (order[:, slot] == op_index)).nonzero().squeeze(1)
            if chosen.numel():
                x01[chosen] = op(x01[chosen], factors[chosen])
    return x01


def random_grayscale(x01: torch.Tensor, generator: torch.Generator, p: float = GRAYSCALE_P) -> torch.Tensor:
    """RandomGrayscale(p): chosen RGB images become gray in all three channels."""
    chosen = (torch.rand(x01.shape[0], generator=generator, device=x01.device) < p).nonzero().squeeze(1)
    if x01.shape[1] == 3 and chosen.numel():
        x01[chosen] = to_grayscale(x01[chosen]).expand(-1, 3, -1, -1)
    return x01


# --- blur --------------------------------------------------------------------------------------


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
def simclr(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SimCLR's view: RandomResizedCrop -> HorizontalFlip -> ColorJitter(p=0.8) ->
    RandomGrayscale(0.2) -> GaussianBlur(3, sigma in [0.1, 2])."""
    batch, _, height, width = x.shape
    boxes = sample_crop_boxes(batch, height, width, generator)
    flip = torch.rand(batch, generator=generator, device=x.device) < FLIP_P
    views = resized_crop_flip(to_unit(x), boxes, flip)
    views = color_jitter(views, generator)
    views = random_grayscale(views, generator)
    sigma = _uniform(batch, BLUR_SIGMA[0], BLUR_SIGMA[1], generator)
    # The blur's normalised kernel can overshoot 1 by a rounding error; the contract is [0, 1].
    return gaussian_blur3(views, sigma).clamp_(0, 1)
