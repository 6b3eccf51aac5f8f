"""Baselines: features of the right shape and scale, deterministic per seed, supervised training learns."""

from __future__ import annotations

import numpy as np
import torch

from contrastlab.baselines import BASELINES, random_init, raw_pixels, train_supervised


def tiny(n_per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes told apart by the row of a bright bar: easy for a CNN, not for noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 60, (len(labels), 1, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 2 + 2 * c : 4 + 2 * c] = 250
    return images, labels


def test_registry_names():
    assert list(BASELINES) == ["raw_pixels", "random_init", "supervised"]


def test_raw_pixels_are_flat_and_scaled_to_unit():
    images = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    features = raw_pixels({"test_images": images})
    np.testing.assert_allclose(features, [[0.0, 1.0, 0.2, 0.4]])


def test_random_init_depends_only_on_the_seed():
    images, _ = tiny(2)
    data = {"test_images": images}
    first = random_init(data, seed=3, embed_batch=7)
    assert first.shape == (20, 32)
    np.testing.assert_array_equal(first, random_init(data, seed=3, embed_batch=64))
    assert not np.allclose(first, random_init(data, seed=4, embed_batch=7))


def test_supervised_training_drives_the_cross_entropy_down():
    images, labels = tiny(10)
    encoder, losses = train_supervised(torch.from_numpy(images), torch.from_numpy(labels), epochs=20, batch_size=25,
                                       lr=0.15, seed=0, device=torch.device("cpu"), progress=False)
    assert len(losses) == 20
    assert losses[0] > 2.0  # about ln(10) = 2.30 for ten classes at the start
    assert losses[-1] < 0.5 * losses[0]
    assert encoder[-1].__class__.__name__ == "Flatten"  # the encoder alone: the linear head is dropped
