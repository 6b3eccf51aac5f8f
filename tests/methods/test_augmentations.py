"""Checks of contrastlab.methods.augmentations: the batch contract, reproducibility, the random parameters'
distributions, hand-computed helper values, and agreement with the torchvision PIL pipelines
that the batched augmentations replace."""

import contextlib
import functools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw

from contrastlab.methods import augmentations as augment
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.pipeline.preprocess import to_unit

SHAPES = [(16, 1, 28, 28), (16, 3, 32, 32)]
RANDOM_AUGMENTATIONS = [name for name in AUGMENTATIONS if name != "none"]  # every view but the identity
# Every way training makes views: the registry, and multi-crop's small crops.
VIEW_MAKERS = {**AUGMENTATIONS, "small_crops": functools.partial(augment.small_crops, count=2, size=16)}
TENSOR_READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")  # a value into Python
VALUE_SHAPED = ("nonzero", "argwhere", "masked_select", "unique")  # a shape computed from the values
HOST_BUILT = ("tensor", "as_tensor")  # from Python values: on a GPU, copied to it at every call


@contextlib.contextmanager
def one_thread():
    """For torchvision's one-image-at-a-time loops: threads gain nothing on such tiny tensors
    and stall them badly when the CPUs are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(shape, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=seeded(seed))


def mnist_like(seed: int, size: int = 28) -> Image.Image:
    """A white stroke and an off-centre ring on black, so that position, scale and rotation
    direction all show in the pixels."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    draw.line([tuple(rng.uniform(5, size - 5, 2)) for _ in range(3)], fill=255, width=3)
    draw.ellipse([size * 0.2, size * 0.15, size * 0.45, size * 0.4], outline=200, width=2)
    return image


def colour_image(size: int = 32) -> Image.Image:
    """Red and green ramps, a blue tint and a yellow disc: every colour op changes it."""
    ys, xs = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([xs, ys, 0.3 + 0.4 * (1 - xs)], axis=-1)
    rgb[(xs - 0.65) ** 2 + (ys - 0.35) ** 2 < 0.04] = [0.9, 0.8, 0.1]
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def as_batch(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([TF.pil_to_tensor(image) for image in images])


def ink_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: ink centroid (x, y) relative to the image centre and RMS radius about it."""
    height, width = images.shape[-2:]
    ys = torch.arange(height).view(-1, 1) + 0.5 - height / 2
    xs = torch.arange(width).view(1, -1) + 0.5 - width / 2
    ink = images[:, 0]
    total = ink.sum(dim=(1, 2))
    centre_x = (ink * xs).sum(dim=(1, 2)) / total
    centre_y = (ink * ys).sum(dim=(1, 2)) / total
    radius = ((ink * (xs**2 + ys**2)).sum(dim=(1, 2)) / total).sqrt()
    return centre_x, centre_y, radius


def torchvision_pad_rotate_scale(size: int, degrees: float) -> T.Compose:
    return T.Compose(
        [
            T.Resize(2 * size),
            T.Pad(18),
            T.RandomRotation((degrees, degrees)),
            T.CenterCrop(int(2 * size * 1.125)),
            T.Resize(size),
            T.ToTensor(),
        ]
    )


def torchvision_simclr(size: int) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(size),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.GaussianBlur(kernel_size=3, sigma=(0.1, 2.0)),
            T.ToTensor(),
        ]
    )


# --- contract ----------------------------------------------------------------------------------


def test_registry_holds_the_studys_three_augmentations_and_shift_flip():
    assert {"none", "pad_rotate_scale", "simclr", "shift_flip"} <= set(AUGMENTATIONS)


def test_register_adds_an_augmentation_under_its_name():
    @augment.register("test_invert")
    def invert(x, generator):
        return 1 - to_unit(x)

    try:
        assert AUGMENTATIONS["test_invert"] is invert
    finally:
        del AUGMENTATIONS["test_invert"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_shape_dtype_and_range(name, shape):
    x = random_images(shape)
    before = x.clone()
    out = AUGMENTATIONS[name](x, seeded(0))
    assert out.shape == shape
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before), "the input batch must not be modified"


@pytest.mark.parametrize("shape", SHAPES)
def test_none_is_exactly_x_over_255(shape):
    x = random_images(shape)
    assert torch.equal(AUGMENTATIONS["none"](x, seeded(0)), x.float() / 255)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_every_sample_gets_its_own_parameters(name, shape):
    one_image = random_images((1, *shape[1:]))
    out = AUGMENTATIONS[name](one_image.expand(shape).contiguous(), seeded(0))
    assert torch.unique(out.flatten(start_dim=1), dim=0).shape[0] == shape[0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", RANDOM_AUGMENTATIONS)
def test_same_seed_same_output_other_seed_other_output(name, shape):
    x = random_images(shape)
    first = AUGMENTATIONS[name](x, seeded(7))
    assert torch.equal(first, AUGMENTATIONS[name](x, seeded(7)))
    assert not torch.allclose(first, AUGMENTATIONS[name](x, seeded(8)))


def refuse_host_synchronisation(patch: pytest.MonkeyPatch) -> None:
    """Make everything that makes the host wait for a GPU raise: reading a tensor's value into Python, a shape computed
    from the values (by a function, or by a boolean mask in indexing, whose count C++ reads back), and building a
    tensor from Python values (a copy to the device)."""

    def refused(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} makes the host wait for the device")

        return call

    for name in TENSOR_READS:
        patch.setattr(torch.Tensor, name, refused(f"Tensor.{name}"))
    for name in VALUE_SHAPED:
        patch.setattr(torch.Tensor, name, refused(f"Tensor.{name}"))
        patch.setattr(torch, name, refused(f"torch.{name}"))
    for name in HOST_BUILT:
        patch.setattr(torch, name, refused(f"torch.{name}"))

    def without_boolean_masks(name, original):
        def call(tensor, index, *value):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts):
                raise AssertionError(f"a boolean mask in Tensor.{name} makes the host wait for the device")
            return original(tensor, index, *value)

        return call

    for name in ("__getitem__", "__setitem__"):
        patch.setattr(torch.Tensor, name, without_boolean_masks(name, getattr(torch.Tensor, name)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(VIEW_MAKERS))
def test_making_views_never_makes_the_host_wait_for_the_device(monkeypatch, name, shape):
    """On a GPU each training step's views must be queued without waiting for the device; on the CPU the same code
    runs with every such wait refused."""
    x = random_images(shape)
    with monkeypatch.context() as patch:
        refuse_host_synchronisation(patch)
        views = VIEW_MAKERS[name](x, seeded(0))
    assert torch.equal(views, VIEW_MAKERS[name](x, seeded(0)))


# --- random parameters -------------------------------------------------------------------------


def test_rotation_angles_are_uniform_on_plus_minus_15():
    n = 20_000
    angles = augment.sample_rotation_degrees(n, seeded(0))
    assert angles.shape == (n,)
    assert angles.min() >= -15 and angles.max() <= 15
    assert abs(angles.mean().item()) < 0.25  # standard error 0.06
    assert abs(angles.std().item() - 30 / math.sqrt(12)) < 0.15
    # Kolmogorov-Smirnov distance to U(-15, 15); 0.015 is beyond the 0.1% critical value.
    empirical = torch.arange(1, n + 1) / n
    uniform_cdf = (angles.sort().values + 15) / 30
    assert (empirical - uniform_cdf).abs().max() < 0.015


def fits_ranges_up_to_rounding(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whether some unrounded area fraction in [0.08, 1] and aspect ratio in [3/4, 4/3] round to
    each box's integer height and width (torchvision rounds both sides)."""
    h, w = boxes[:, 2].double(), boxes[:, 3].double()
    area_low = (w - 0.5) * (h - 0.5) / (height * width)
    area_high = (w + 0.5) * (h + 0.5) / (height * width)
    ratio_low, ratio_high = (w - 0.5) / (h + 0.5), (w + 0.5) / (h - 0.5)
    return (area_high >= 0.08) & (area_low <= 1) & (ratio_high >= 3 / 4) & (ratio_low <= 4 / 3)


def torchvision_crop_boxes(n: int, height: int, width: int) -> torch.Tensor:
    with one_thread(), torch.random.fork_rng():
        torch.manual_seed(0)
        image = torch.zeros(1, height, width)
        params = [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    return torch.tensor(params)


# centre_tolerance (pixels) is about 3 standard errors: an offset that is off by one moves it 0.5.
@pytest.mark.parametrize(("height", "width", "n", "centre_tolerance"), [(28, 28, 20_000, 0.2), (8, 64, 4_000, 0.4)])
def test_crop_boxes_follow_torchvision_sampler(height, width, n, centre_tolerance):
    ours = augment.sample_crop_boxes(n, height, width, seeded(0))
    theirs = torchvision_crop_boxes(n, height, width)
    assert ours.dtype == torch.int64 and ours.shape == (n, 4)
    top, left, h, w = ours.unbind(dim=1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= height).all() and (left + w <= width).all()

    # The centre-crop fallback of torchvision, for a 8x64 image: full height, width 11, centred.
    fallback = torch.tensor([0, 26, 8, 11] if width / height > 4 / 3 else [0, 0, height, width])
    ours_fallback = (ours == fallback).all(dim=1)
    theirs_fallback = (theirs == fallback).all(dim=1)
    assert fits_ranges_up_to_rounding(ours[~ours_fallback], height, width).all()
    assert abs(ours_fallback.float().mean() - theirs_fallback.float().mean()) < 0.04

    def summary(boxes):
        top, left, h, w = boxes.double().unbind(dim=1)
        area = h * w / (height * width)
        centre_y, centre_x = (top + h / 2).mean(), (left + w / 2).mean()
        return area.mean(), area.std(), torch.log(w / h).mean(), centre_y, centre_x

    ours_area, ours_area_std, ours_log_ratio, ours_centre_y, ours_centre_x = summary(ours)
    theirs_area, theirs_area_std, theirs_log_ratio, theirs_centre_y, theirs_centre_x = summary(theirs)
    assert abs(ours_area - theirs_area) < 0.01
    assert abs(ours_area_std - theirs_area_std) < 0.01
    assert abs(ours_log_ratio - theirs_log_ratio) < 0.02
    assert abs(ours_centre_y - theirs_centre_y) < centre_tolerance
    assert abs(ours_centre_x - theirs_centre_x) < centre_tolerance


def test_jitter_params_ranges_and_orders():
    n = 20_000
    params = augment.sample_jitter_params(n, seeded(0))
    assert abs(params.applied.float().mean() - 0.8) < 0.015
    low = torch.tensor([0.2, 0.2, 0.2, -0.2])
    high = torch.tensor([1.8, 1.8, 1.8, 0.2])
    assert (params.factors >= low).all() and (params.factors <= high).all()
    assert torch.allclose(params.factors.mean(dim=0), (low + high) / 2, atol=0.02)
    assert torch.equal(params.order.sort(dim=1).values, torch.arange(4).expand(n, 4))
    # Every op lands in every slot a quarter of the time: the order really is per sample.
    slot_share = torch.stack([(params.order == op).float().mean(dim=0) for op in range(4)])
    assert torch.allclose(slot_share, torch.full((4, 4), 0.25), atol=0.015)


def test_blur_sigma_is_uniform_on_its_range():
    sigma = augment.sample_blur_sigma(20_000, seeded(0))
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0
    assert abs(sigma.mean().item() - 1.05) < 0.01


# --- pad_rotate_scale against torchvision ------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32])
def test_unrotated_geometry_matches_torchvision_pipeline(size):
    images = [mnist_like(seed, size) for seed in range(6)]
    theirs = torch.stack([torchvision_pad_rotate_scale(size, 0.0)(image) for image in images])
    ours = augment.rotate_zoomed_out(to_unit(as_batch(images)), torch.zeros(len(images)))
    assert (ours - theirs).abs().mean() < 0.03
    ours_x, ours_y, ours_radius = ink_moments(ours)
    theirs_x, theirs_y, theirs_radius = ink_moments(theirs)
    # Same centre (torchvision's crop rounding shifts it by 0.22 pixel at size 28) ...
    assert (ours_x - theirs_x).abs().max() < 0.3 and (ours_y - theirs_y).abs().max() < 0.3
    # ... and same zoom: the ink's radius scales with it, and zooms of 1.06 or 1.19 miss by 6%.
    assert abs((ours_radius / theirs_radius).mean() - 1) < 0.025


@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_rotation_direction_matches_torchvision(degrees):
    """Positive angles turn counter-clockwise as in torchvision (the random angle's distribution
    is symmetric, so a flipped sign would go unnoticed in training, but not here)."""
    images = [mnist_like(seed) for seed in range(4)]
    theirs = torch.stack([torchvision_pad_rotate_scale(28, degrees)(image) for image in images])
    x01 = to_unit(as_batch(images))
    same_way = augment.rotate_zoomed_out(x01, torch.full((4,), degrees))
    other_way = augment.rotate_zoomed_out(x01, torch.full((4,), -degrees))
    assert (same_way - theirs).abs().mean() < 0.03
    assert (other_way - theirs).abs().mean() > 0.06


def test_random_rotation_keeps_the_zoom():
    images = [mnist_like(seed) for seed in range(6)]
    theirs = torch.stack([torchvision_pad_rotate_scale(28, 0.0)(image) for image in images])
    ours = AUGMENTATIONS["pad_rotate_scale"](as_batch(images), seeded(0))
    assert abs((ink_moments(ours)[2] / ink_moments(theirs)[2]).mean() - 1) < 0.025


# --- simclr against torchvision ----------------------------------------------------------------


@pytest.mark.parametrize("image", [colour_image(32), mnist_like(0, 28)], ids=["rgb32", "gray28"])
def test_simclr_statistics_match_torchvision_pipeline(image):
    n = 2000
    size = image.size[0]
    pipeline = torchvision_simclr(size)
    with one_thread(), torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torch.stack([pipeline(image) for _ in range(n)])
    x = TF.pil_to_tensor(image).expand(n, -1, -1, -1).contiguous()
    ours = AUGMENTATIONS["simclr"](x, seeded(0))

    ours_means, theirs_means = ours.mean(dim=(1, 2, 3)), theirs.mean(dim=(1, 2, 3))
    assert abs(ours_means.mean() - theirs_means.mean()) < 0.03
    assert abs(ours_means.std() - theirs_means.std()) < 0.03
    ours_contrast, theirs_contrast = ours.std(dim=(2, 3)).mean(dim=1), theirs.std(dim=(2, 3)).mean(dim=1)
    assert abs(ours_contrast.mean() - theirs_contrast.mean()) < 0.03
    assert torch.allclose(ours.mean(dim=(0, 2, 3)), theirs.mean(dim=(0, 2, 3)), atol=0.03)

    # Both images are brighter on one side, so the mean left-right tilt shows the flip rate
    # (without flips it would be off by 0.07).
    def tilt(views):
        return views[..., : size // 2].mean() - views[..., size // 2 :].mean()

    assert abs(tilt(ours) - tilt(theirs)) < 0.025
    if image.mode == "RGB":

        def gray_share(views):
            gray = (views[:, 0] == views[:, 1]) & (views[:, 1] == views[:, 2])
            return gray.flatten(start_dim=1).all(dim=1).float().mean()

        assert abs(gray_share(ours) - 0.2) < 0.04
        assert abs(gray_share(theirs) - 0.2) < 0.04


# --- helpers, by hand and against torchvision's tensor functions -------------------------------


def test_grayscale_weights():
    primaries = torch.eye(3).view(3, 3, 1, 1)
    assert torch.allclose(augment.to_grayscale(primaries).flatten(), torch.tensor([0.299, 0.587, 0.114]))
    gray = torch.rand(2, 1, 4, 4, generator=seeded(0))
    assert augment.to_grayscale(gray) is gray


def test_brightness():
    x = torch.tensor([0.2, 0.6, 1.0]).view(1, 1, 1, 3)
    assert torch.allclose(augment.adjust_brightness(x, torch.tensor([0.5])), x / 2)
    brighter = augment.adjust_brightness(x, torch.tensor([1.8]))
    assert torch.allclose(brighter.flatten(), torch.tensor([0.36, 1, 1]))


def test_contrast_zero_gives_the_grayscale_mean():
    red_and_blue = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(1, 3, 1, 2)
    flat = augment.adjust_contrast(red_and_blue, torch.tensor([0.0]))
    assert torch.allclose(flat, torch.full_like(flat, (0.299 + 0.114) / 2))
    gray = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2)
    assert torch.allclose(augment.adjust_contrast(gray, torch.tensor([0.0])), torch.full_like(gray, 0.4))
    steeper = augment.adjust_contrast(gray, torch.tensor([2.0]))
    assert torch.allclose(steeper.flatten(), torch.tensor([0.0, 0.8]))


def test_saturation():
    orange = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    luma = 0.299 + 0.587 * 0.5
    desaturated = augment.adjust_saturation(orange, torch.tensor([0.0]))
    assert torch.allclose(desaturated.flatten(), torch.full((3,), luma))
    assert torch.allclose(augment.adjust_saturation(orange, torch.tensor([1.0])), orange)
    gray = torch.rand(2, 1, 4, 4, generator=seeded(0))
    assert augment.adjust_saturation(gray, torch.tensor([0.2, 1.8])) is gray


def test_hue():
    x = torch.rand(4, 3, 8, 8, generator=seeded(0))
    assert torch.allclose(augment.adjust_hue(x, torch.zeros(4)), x, atol=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    green, blue = torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1])
    assert torch.allclose(augment.adjust_hue(red, torch.tensor([1 / 3])).flatten(), green, atol=1e-6)
    assert torch.allclose(augment.adjust_hue(red, torch.tensor([-1 / 3])).flatten(), blue, atol=1e-6)
    orange = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    azure = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(augment.adjust_hue(orange, torch.tensor([0.5])).flatten(), azure, atol=1e-6)
    gray = torch.rand(2, 1, 4, 4, generator=seeded(0))
    assert augment.adjust_hue(gray, torch.tensor([0.1, -0.1])) is gray


def test_colour_ops_agree_with_torchvision_tensor_functions():
    x = torch.rand(16, 3, 8, 8, generator=seeded(0))
    factors = torch.rand(16, generator=seeded(1)) * 1.6 + 0.2
    shifts = torch.rand(16, generator=seeded(2)) * 0.4 - 0.2
    pairs = [
        (augment.adjust_brightness(x, factors), TF.adjust_brightness, factors),
        (augment.adjust_contrast(x, factors), TF.adjust_contrast, factors),
        (augment.adjust_saturation(x, factors), TF.adjust_saturation, factors),
        (augment.adjust_hue(x, shifts), TF.adjust_hue, shifts),
    ]
    for ours, torchvision_op, values in pairs:
        theirs = torch.stack([torchvision_op(image, value.item()) for image, value in zip(x, values, strict=True)])
        # torchvision's tensor grayscale weighs red 0.2989 instead of PIL's 0.299.
        assert torch.allclose(ours, theirs, atol=1e-3), torchvision_op.__name__


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_applies_each_samples_ops_in_its_order(channels):
    n = 64
    x = torch.rand(n, channels, 6, 6, generator=seeded(0))
    params = augment.sample_jitter_params(n, seeded(1))
    ours = augment.color_jitter_(x.clone(), params)
    torchvision_ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for image, jittered, applied, factors, order in zip(x, ours, *params, strict=True):
        expected = image
        for op_index in order.tolist() if applied else []:
            expected = torchvision_ops[op_index](expected, factors[op_index].item())
        assert torch.allclose(jittered, expected, atol=1e-3)
    assert not params.applied.all() and params.applied.any()


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_gives_bit_for_bit_what_the_single_ops_give_one_image_at_a_time(channels):
    """The whole-batch steps with per-image factors change nothing in the arithmetic; and an image that does not
    jitter keeps its values exactly, even outside [0, 1] (no clamp)."""
    n = 64
    x = torch.rand(n, channels, 6, 6, generator=seeded(0)) * 1.2 - 0.1
    params = augment.sample_jitter_params(n, seeded(1), p=0.5)
    ops = [augment.adjust_brightness, augment.adjust_contrast, augment.adjust_saturation, augment.adjust_hue]
    ours = augment.color_jitter_(x.clone(), params)
    for i, (applied, order) in enumerate(zip(params.applied, params.order, strict=True)):
        expected = x[i : i + 1]
        for op_index in order.tolist() if applied else []:
            expected = ops[op_index](expected, params.factors[i : i + 1, op_index])
        assert torch.equal(ours[i : i + 1], expected), f"image {i}"


def test_grayscale_only_the_chosen_rgb_images():
    x = torch.rand(4, 3, 5, 5, generator=seeded(0))
    chosen = torch.tensor([True, False, True, False])
    out = augment.grayscale_(x.clone(), chosen)
    assert torch.equal(out[chosen], augment.to_grayscale(x[chosen]).expand(-1, 3, -1, -1))
    assert torch.equal(out[~chosen], x[~chosen])


@pytest.mark.parametrize("size", [None, 12])  # back to the image's size, or to a small crop's
def test_resized_crop_flip_matches_torchvision_resized_crop(size):
    n, height, width = 32, 28, 20
    x = torch.rand(n, 3, height, width, generator=seeded(0))
    boxes = augment.sample_crop_boxes(n, height, width, seeded(1))
    flip = torch.rand(n, generator=seeded(2)) < 0.5
    ours = augment.resized_crop_flip(x, boxes, flip, size)
    for image, view, box, flipped in zip(x, ours, boxes.tolist(), flip, strict=True):
        theirs = TF.resized_crop(image, *box, [height, width] if size is None else [size, size], antialias=False)
        assert torch.allclose(view, theirs.flip(-1) if flipped else theirs, atol=1e-5)
    whole = torch.tensor([[0, 0, height, width]] * n)
    never, always = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    assert torch.allclose(augment.resized_crop_flip(x, whole, never), x, atol=1e-6)
    assert torch.allclose(augment.resized_crop_flip(x, whole, always), x.flip(-1), atol=1e-6)


def test_small_crops_are_count_small_simclr_views_of_each_image_crop_after_crop():
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=seeded(0))
    crops = augment.small_crops(x, seeded(1), count=4, size=16)
    assert crops.shape == (20, 3, 16, 16) and crops.dtype == torch.float32 and 0 <= crops.min() <= crops.max() <= 1
    boxes = augment.sample_crop_boxes(20, 32, 32, seeded(1), scale=augment.SMALL_CROP_SCALE)  # the same first draws
    areas = (boxes[:, 2] * boxes[:, 3]).float() / (32 * 32)
    assert areas.max() <= augment.SMALL_CROP_SCALE[1] + 0.05  # small parts of the image (rounding to whole pixels)
    same = augment.small_crops(x[[0]].repeat(5, 1, 1, 1), seeded(1), count=4, size=16)
    assert not torch.equal(same[0], same[5])  # the second crop of an image is drawn anew


def test_shifted_crop_by_hand():
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)  # 1 2 3 / 4 5 6 / 7 8 9
    top_left = augment.shifted_crop(x, torch.tensor([0]), torch.tensor([0]), padding=1)
    assert top_left.tolist() == [[[[0, 0, 0], [0, 1, 2], [0, 4, 5]]]]  # the image moved down and right
    centre = augment.shifted_crop(x, torch.tensor([1]), torch.tensor([1]), padding=1)
    assert torch.equal(centre, x)
    bottom_left = augment.shifted_crop(x, torch.tensor([2]), torch.tensor([0]), padding=1)
    assert bottom_left.tolist() == [[[[0, 4, 5], [0, 7, 8], [0, 0, 0]]]]


def test_shifted_crop_matches_torchvision_pad_and_crop():
    x = torch.rand(16, 3, 32, 32, generator=seeded(0))
    top, left = torch.randint(0, 9, (16,), generator=seeded(1)), torch.randint(0, 9, (16,), generator=seeded(2))
    ours = augment.shifted_crop(x, top, left, padding=4)
    for image, view, row, col in zip(x, ours, top.tolist(), left.tolist(), strict=True):
        assert torch.equal(view, TF.crop(TF.pad(image, [4]), row, col, 32, 32))


@pytest.mark.parametrize("size, padding", [(32, 4), (28, 4)])
def test_shift_flip_is_a_whole_pixel_shift_of_at_most_s_over_8_flipped_half_the_time(size, padding):
    n = 2000
    one_image = random_images((1, 3, size, size))
    views = AUGMENTATIONS["shift_flip"](one_image.expand(n, -1, -1, -1).contiguous(), seeded(0))
    image = to_unit(one_image)
    every_shift = {}
    for row in range(2 * padding + 1):
        for col in range(2 * padding + 1):
            shifted = augment.shifted_crop(image, torch.tensor([row]), torch.tensor([col]), padding)[0]
            every_shift[row, col, False], every_shift[row, col, True] = shifted, shifted.flip(-1)
    found = [next(key for key, candidate in every_shift.items() if torch.equal(view, candidate)) for view in views]
    assert len(set(found)) == len(every_shift)  # every shift and both mirror images occur
    assert sum(flipped for _, _, flipped in found) / n == pytest.approx(0.5, abs=0.04)
    assert sum(row == padding and col == padding for row, col, _ in found) / n == pytest.approx(1 / 81, abs=0.01)


def test_blur_keeps_constants_and_mass():
    sigma = torch.tensor([0.1, 1.0, 2.0])
    constant = torch.full((3, 3, 9, 9), 0.7)
    assert torch.allclose(augment.gaussian_blur3(constant, sigma), constant, atol=1e-6)

    impulse = torch.zeros(3, 1, 9, 9)
    impulse[:, :, 4, 4] = 1.0
    blurred = augment.gaussian_blur3(impulse, sigma)
    assert torch.allclose(blurred.sum(dim=(1, 2, 3)), torch.ones(3), atol=1e-6)
    side = math.exp(-0.5) / (1 + 2 * math.exp(-0.5))  # sigma 1: weights e^-1/2, 1, e^-1/2
    centre = 1 / (1 + 2 * math.exp(-0.5))
    assert blurred[1, 0, 4, 4].item() == pytest.approx(centre**2, abs=1e-6)
    assert blurred[1, 0, 3, 4].item() == pytest.approx(centre * side, abs=1e-6)
    assert blurred[1, 0, 3, 3].item() == pytest.approx(side**2, abs=1e-6)
    assert blurred[0, 0, 4, 4] > 0.99  # sigma 0.1 barely blurs


def test_blur_matches_torchvision_with_reflect_padding():
    x = torch.rand(8, 3, 7, 7, generator=seeded(0))
    sigma = augment.sample_blur_sigma(8, seeded(1))
    theirs = torch.stack([TF.gaussian_blur(image, [3, 3], [s.item()] * 2) for image, s in zip(x, sigma, strict=True)])
    assert torch.allclose(augment.gaussian_blur3(x, sigma), theirs, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_runs_on_cuda_with_a_cuda_generator(name):
    x = random_images((16, 3, 32, 32)).cuda()
    out = AUGMENTATIONS[name](x, torch.Generator(device="cuda").manual_seed(0))
    assert out.device == x.device and out.dtype == torch.float32 and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, AUGMENTATIONS[name](x, torch.Generator(device="cuda").manual_seed(0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(VIEW_MAKERS))
def test_making_views_on_cuda_never_waits_for_the_device(name):
    x = random_images((16, 3, 32, 32)).cuda()
    first, second = (torch.Generator(device="cuda").manual_seed(0) for _ in range(2))
    views = VIEW_MAKERS[name](x, first)  # loads the kernels and library handles
    torch.cuda.set_sync_debug_mode("error")  # from here, a synchronising CUDA call raises
    try:
        again = VIEW_MAKERS[name](x, second)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(views, again)
