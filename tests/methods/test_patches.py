"""Patch features: each step checked by hand, the encoders' shape, scale and seeding, bad params, class content."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from contrastlab.infra.errors import ParamError
from contrastlab.methods.patches import (
    centroid_distances,
    kmeans,
    kmeans_patches,
    nearest_atoms_code,
    nearest_indicators_,
    normalise_contrast,
    quadrant_sums,
    random_patches,
    sample_patches,
    triangle_,
    zca_whitening,
)

FITS = {
    "kmeans": lambda images, k, **kw: kmeans_patches(images, centroids=k, **kw),
    "random": lambda images, k, **kw: random_patches(images, filters=k, **kw),
}


def noise_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_triangle_code_computed_by_hand():
    centroids = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    distances = centroid_distances(points, centroids)  # (0, 5, 1) and (3, 4, sqrt(10))
    torch.testing.assert_close(distances, torch.tensor([[0.0, 5.0, 1.0], [3.0, 4.0, math.sqrt(10)]]))
    mean = (7 + math.sqrt(10)) / 3  # second row: max(0, mean - z)
    expected = torch.tensor([[2.0, 0.0, 1.0], [mean - 3, 0.0, mean - math.sqrt(10)]])  # first row: mean 2
    torch.testing.assert_close(triangle_(distances), expected)


def test_contrast_normalisation_is_coates_computed_by_hand():
    patch = torch.tensor([[0.0, 2.0, 4.0, 6.0]])  # mean 3, var (9 + 1 + 1 + 9) / 3 as MATLAB's var
    expected = torch.tensor([[-3.0, -1.0, 1.0, 3.0]]) / math.sqrt(20 / 3 + 10)
    torch.testing.assert_close(normalise_contrast(patch), expected)
    single = torch.tensor([[7.0]])  # MATLAB: the variance of one value is 0
    torch.testing.assert_close(normalise_contrast(single), torch.tensor([[0.0]]))


def test_zca_whitening_gives_the_identity_covariance_as_eps_goes_to_zero():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    points = torch.randn(4000, 5, generator=generator, dtype=torch.float64) @ mixing + 3.0
    mean, matrix = zca_whitening(points, eps=1e-12)
    whitened = (points - mean) @ matrix
    torch.testing.assert_close(whitened.T @ whitened / (len(points) - 1), torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(matrix, matrix.T)  # ZCA: the symmetric one, closest to the data
    shrunk = (points - mean) @ zca_whitening(points, eps=0.1)[1]
    assert (shrunk.var(dim=0) < 1).all()  # eps damps the small eigenvalues' directions


def test_quadrant_sums_of_a_hand_made_map():
    first = torch.arange(1.0, 10.0).view(1, 3, 3, 1)  # rows 1 2 3 / 4 5 6 / 7 8 9; the middle row and column go first
    responses = torch.cat([first, 10 * first], dim=3)  # two atoms
    # top-left 1+2+4+5, top-right 3+6, bottom-left 7+8, bottom-right 9; feature q * K + k
    expected = torch.tensor([[12.0, 120.0, 9.0, 90.0, 15.0, 150.0, 9.0, 90.0]])
    torch.testing.assert_close(quadrant_sums(responses), expected)
    even = torch.ones(2, 4, 6, 3)
    torch.testing.assert_close(quadrant_sums(even), torch.full((2, 12), 6.0))  # 2 x 3 in each quadrant


def test_nearest_indicators_mark_the_largest_scores_of_each_row():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9, 0.2], [5.0, 4.0, 3.0, 2.0, 1.0]])
    torch.testing.assert_close(nearest_indicators_(scores, 2), torch.tensor([[0.0, 1, 0, 1, 0], [1.0, 1, 0, 0, 0]]))
    many = nearest_indicators_(torch.randn(300, 50, generator=torch.Generator().manual_seed(0)), 20)
    assert (many.sum(dim=1) == 20).all()


def test_nearest_atoms_code_picks_the_atoms_nearest_in_the_whitened_space():
    generator = torch.Generator().manual_seed(0)
    atoms = torch.rand(12, 4, generator=generator, dtype=torch.float64)  # pixels in [0, 1]
    whitening = torch.randn(4, 4, generator=generator, dtype=torch.float64)  # any matrix, not only a symmetric one
    pixels = torch.randint(0, 256, (30, 4), generator=generator).float()  # the code reads pixels 0..255
    code = nearest_atoms_code(atoms, whitening, neighbours=5)
    distances = torch.cdist((pixels.double() / 255) @ whitening, atoms @ whitening)
    expected = torch.zeros(30, 12).scatter_(1, distances.topk(5, dim=1, largest=False).indices, 1.0)
    torch.testing.assert_close(code(pixels), expected)


def test_kmeans_moves_each_centroid_to_its_points_mean_and_leaves_an_empty_one():
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    initial = torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])
    torch.testing.assert_close(
        kmeans(points, initial, iterations=1), torch.tensor([[0.0, 0.5], [10.0, 10.5], [100.0, 100.0]])
    )
    torch.testing.assert_close(initial, torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]]))  # not changed


def test_sampled_patches_are_distinct_positions_in_unfold_order():
    images = np.arange(2 * 2 * 4 * 4, dtype=np.uint8).reshape(2, 2, 4, 4)  # every pixel different
    every = F.unfold(torch.from_numpy(images).float(), 2).transpose(1, 2).reshape(-1, 8).numpy()  # 2 x 9 patches
    sample = sample_patches(images, 2, 100, np.random.default_rng(0))  # asks for more than there are
    assert sample.shape == (18, 8) and sample.dtype == np.uint8
    assert sorted(map(tuple, sample)) == sorted(map(tuple, every.astype(np.uint8)))
    assert len(sample_patches(images, 2, 5, np.random.default_rng(0))) == 5


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar"])
def test_features_are_standardised_float32_rows_of_width_4k_and_seeded(fit, shape):
    train = noise_images(10, shape)
    encoder = FITS[fit](train, 8, size=5, seed=1, progress=False)
    features = encoder(train, batch_size=3)
    assert encoder.width == 32 and features.shape == (10, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0), 1, atol=1e-3)
    np.testing.assert_allclose(encoder(train, batch_size=1), features, rtol=1e-4, atol=1e-4)
    other = noise_images(3, shape, seed=9)
    assert encoder(other).shape == (3, 32)
    again = FITS[fit](train, 8, size=5, seed=1, progress=False)
    assert again(other).tobytes() == encoder(other).tobytes()
    assert not np.allclose(FITS[fit](train, 8, size=5, seed=2, progress=False)(other), encoder(other))


@pytest.mark.parametrize("fit", FITS)
def test_features_do_not_depend_on_torchs_thread_count_which_is_left_as_it_was(fit):
    train = noise_images(12, (3, 16, 16))
    encoder = FITS[fit](train, 6, size=5, progress=False)
    threads = torch.get_num_threads()
    features = encoder(train, batch_size=2)  # six steps, shared among the threads
    assert torch.get_num_threads() == threads
    try:
        torch.set_num_threads(1)
        assert encoder(train, batch_size=2).tobytes() == features.tobytes()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_random_patches_mark_q_of_k_atoms_at_every_position():
    train = noise_images(10, (3, 10, 10))
    encoder = random_patches(train, filters=10, size=4, progress=False)
    patches = F.unfold(torch.from_numpy(train).float(), 4).transpose(1, 2).reshape(-1, 48)
    assert encoder.code.neighbours == 4  # 0.4 K
    assert (encoder.code(patches).sum(dim=1) == 4).all()


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize(
    "k, size, shape, message",
    [
        (0, 6, (1, 12, 12), r"patches\.centroids=0 is not allowed; expected a positive integer"),
        (-3, 6, (1, 12, 12), r"patches\.centroids=-3 "),
        (2.0, 6, (1, 12, 12), r"patches\.centroids=2\.0 "),
        (True, 6, (1, 12, 12), r"patches\.centroids=True "),
        ("8", 6, (1, 12, 12), r"patches\.centroids='8' "),
        (4, 0, (1, 12, 12), r"patches\.size=0 is not allowed; expected a positive integer"),
        (4, True, (1, 12, 12), r"patches\.size=True "),
        (4, 3.0, (1, 12, 12), r"patches\.size=3\.0 "),
        (4, 13, (1, 12, 12), r"patches\.size=13 is larger than the 12x12 training images"),
        (4, 9, (1, 20, 8), r"patches\.size=9 is larger than the 20x8 training images"),
    ],
)
def test_a_bad_param_is_named_in_a_one_line_error_before_any_work(fit, k, size, shape, message, capsys):
    train = noise_images(3, shape)
    kept = train.copy()
    with pytest.raises(ParamError, match=r"^params\.yaml: " + message) as caught:
        FITS[fit](train, k, size=size)
    assert "\n" not in str(caught.value)
    assert capsys.readouterr() == ("", "")
    np.testing.assert_array_equal(train, kept)


@pytest.mark.parametrize("fit", FITS)
def test_more_atoms_than_distinct_training_patches_is_a_param_error(fit, capsys):
    train = np.zeros((4, 1, 8, 8), dtype=np.uint8)
    train[0, 0, 0, 0] = 255  # two distinct 8x8 patches among the four images
    with pytest.raises(
        ParamError,
        match=r"^params\.yaml: patches\.centroids=3 needs 3 distinct 8x8 training patches "
        r"but there are only 2; use fewer$",
    ):
        FITS[fit](train, 3, size=8)
    assert capsys.readouterr() == ("", "")
    assert FITS[fit](train, 2, size=8, progress=False).width == 8


def stripes(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal (class 0) or vertical (class 1) stripes of period 4 at a random phase, in heavy noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    wave = (np.arange(16)[:, None] + rng.integers(0, 4, len(labels))) % 4 < 2  # (16, n)
    images = np.empty((len(labels), 1, 16, 16))
    for i, label in enumerate(labels):
        images[i, 0] = np.repeat(wave[:, i, None], 16, axis=1) if label == 0 else np.repeat(wave[None, :, i], 16, 0)
    noisy = 80 + 100 * images + rng.normal(0, 40, images.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), labels


@pytest.mark.parametrize("fit", FITS)
def test_the_features_tell_stripe_directions_apart(fit):
    train, train_labels = stripes(40, seed=0)
    test, test_labels = stripes(40, seed=1)
    encoder = FITS[fit](train, 16, size=4, progress=False)  # no labels
    probe = LogisticRegression(C=1, solver="newton-cg", max_iter=200).fit(encoder(train), train_labels)
    assert probe.score(encoder(test), test_labels) > 0.9  # chance is 0.5
