"""Baselines: representations fitted on the training images that give features of the right shape and scale,
deterministic per seed; supervised training learns; the patch baselines get their settings."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from contrastlab.infra.errors import TrainingDiverged
from contrastlab.methods import baselines as baselines_module
from contrastlab.methods import patches
from contrastlab.methods.baselines import BASELINES, calibrate_batchnorm, random_init, raw_pixels, train_supervised
from contrastlab.methods.encoders import Encoder, make_encoder
from contrastlab.pipeline.embed import embed_images
from contrastlab.pipeline.preprocess import normalize, to_unit
from contrastlab.pipeline.train import TrainConfig

CPU = torch.device("cpu")


def tiny(n_per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes told apart by the row of a bright bar: easy for a CNN, not for noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 60, (len(labels), 1, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 2 + 2 * c : 4 + 2 * c] = 250
    return images, labels


def settings(seed=0, batch_size=8, embed_batch=7, anchors=5, epochs=1, features="embedding", centroids=4):
    """A baseline's params (params.BASELINE's keys)."""
    return {
        "dataset": "mnist",
        "seed": seed,
        "model": {"arch": "study", "embedding_dim": 32},
        "pairs": {"anchors_per_class": anchors},
        "train": {"epochs": epochs, "lr": 0.15, "batch_size": batch_size},
        "embed": {"batch_size": embed_batch},
        "probe": {
            "test_size": 0.2,
            "knn_k": 3,
            "max_iter": 100,
            "standardize": False,
            "features": features,
            "protocol": "study",
        },
        "patches": {"centroids": centroids, "size": 6},
    }


PATCH_BASELINES = ("kmeans_patches", "random_patches")  # 4 x patches.centroids features of their own


@pytest.mark.parametrize("features, width", [("embedding", 32), ("backbone", 256)])
def test_every_baseline_gives_one_row_of_the_chosen_features_per_image(features, width):
    images, labels = tiny(5)
    for name, baseline in BASELINES.items():
        represent = baseline.fit(
            {"train_images": images, "train_labels": labels}, settings(features=features), CPU, progress=False
        )
        widths = {"raw_pixels": 28 * 28 if features == "embedding" else width, **dict.fromkeys(PATCH_BASELINES, 16)}
        assert represent(images[:7]).shape == (7, widths.get(name, width)), name
        assert baseline.label, name


def raw(images, **p):
    """The raw_pixels baseline's features of `images`, fitted on the same images."""
    return raw_pixels({"train_images": images}, settings(**p), CPU)(images)


def test_raw_pixels_are_flat_and_scaled_to_unit():
    images = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    np.testing.assert_allclose(raw(images), [[0.0, 1.0, 0.2, 0.4]])


def test_raw_pixels_against_backbone_features_are_a_fixed_random_projection_to_their_size():
    images, _ = tiny(1)
    projected = raw(images, features="backbone")
    matrix = np.random.default_rng(0).standard_normal((784, 256), dtype=np.float32) / np.sqrt(784)
    np.testing.assert_allclose(projected, raw(images) @ matrix, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(projected, raw(images, features="backbone"))
    assert not np.allclose(projected, raw(images, seed=1, features="backbone"))


def test_random_init_depends_only_on_the_seed():
    images, _ = tiny(2)
    data = {"train_images": tiny(3, seed=1)[0]}
    first = random_init(data, settings(seed=3, embed_batch=7), CPU)(images)
    assert first.shape == (20, 32)
    # other batches may take other convolution kernels, which round differently (a batch of 1 by 4e-7)
    np.testing.assert_allclose(
        first, random_init(data, settings(seed=3, embed_batch=64), CPU)(images), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(first, random_init(data, settings(seed=4, embed_batch=7), CPU)(images))


def test_batchnorm_statistics_are_the_mean_over_batches_of_each_batchs_mean_and_variance():
    images, _ = tiny(4)  # 40 images: batches of 16, 16 and 8
    torch.manual_seed(0)
    encoder = make_encoder(1)
    calibrate_batchnorm(encoder, images, batch_size=16)
    with torch.no_grad():  # the first BatchNorm's input: conv, LeakyReLU, conv
        inputs = [encoder.backbone[:3](normalize(to_unit(torch.from_numpy(images[s : s + 16])))) for s in (0, 16, 32)]
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(dim=0)
    variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in inputs]).mean(dim=0)
    first = encoder.backbone[3]
    torch.testing.assert_close(first.running_mean, means)
    torch.testing.assert_close(first.running_var, variances)
    assert not encoder.training
    assert first.momentum == 0.1  # as it was: later training would average exponentially again


def test_random_init_features_are_normalised_where_the_default_statistics_are_not():
    # Untrained, with BatchNorm's initial statistics (0, 1), the embeddings barely differ between
    # images; measured statistics spread them the way training-mode BatchNorm would.
    images, _ = tiny(10)
    calibrated = random_init({"train_images": images}, settings(batch_size=32, embed_batch=64), CPU)(images)
    torch.manual_seed(0)
    default = embed_images(make_encoder(1), images, batch_size=64)["embedding"]
    assert calibrated.std(axis=0).mean() > 10 * default.std(axis=0).mean()


def test_supervised_training_drives_the_cross_entropy_down():
    images, labels = tiny(10)
    config = TrainConfig(loss="triplet", aug="none", seed=0, epochs=20, lr=0.15, batch_size=25)
    encoder, losses = train_supervised(
        torch.from_numpy(images), torch.from_numpy(labels), config, device=CPU, progress=False
    )
    assert len(losses) == 20
    assert losses[0] > 2.0  # about ln(10) = 2.30 for ten classes at the start
    assert losses[-1] < 0.5 * losses[0]
    assert isinstance(encoder, Encoder)  # the encoder alone: the linear head is dropped


def test_supervised_training_logged_to_a_file_prints_one_line_per_epoch_with_its_loss(capsys):
    images, labels = tiny(5)
    config = TrainConfig(loss="triplet", aug="none", seed=0, epochs=2, lr=0.05, batch_size=25)
    _, losses = train_supervised(torch.from_numpy(images), torch.from_numpy(labels), config, device=CPU)
    out = capsys.readouterr().out  # captured: not a terminal
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 2
    for epoch, (line, loss) in enumerate(zip(lines, losses, strict=True), start=1):
        assert re.fullmatch(rf"epoch {epoch}/2: loss {loss:.4f}, [\d,]+ images/s", line), line


def test_supervised_training_that_diverges_stops_with_the_step_and_advice():
    images, labels = tiny(10)
    config = TrainConfig(loss="triplet", aug="none", seed=0, epochs=2, lr=1e38, batch_size=25)
    with pytest.raises(
        TrainingDiverged,
        match=r"^training diverged: the supervised baseline's cross-entropy became "
        r"(nan|inf) at epoch 1, step \d \(lr 1e\+38, sgd\); lower train.lr",
    ):
        train_supervised(torch.from_numpy(images), torch.from_numpy(labels), config, device=CPU, progress=False)


def test_supervised_training_follows_the_recipe():
    images, labels = tiny(5)
    protocol = TrainConfig(loss="triplet", aug="none", seed=0, epochs=2, lr=0.05, batch_size=25)
    adamw = TrainConfig(
        loss="triplet", aug="none", seed=0, epochs=2, lr=0.05, batch_size=25, optimizer="adamw", schedule="onecycle"
    )
    weights = [
        train_supervised(torch.from_numpy(images), torch.from_numpy(labels), config, device=CPU, progress=False)[0]
        .backbone[0]
        .weight
        for config in (protocol, protocol, adamw)
    ]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_supervised_training_draws_fresh_views_of_the_configs_augmentation():
    images, labels = tiny(5)

    def first_conv(aug: str) -> torch.Tensor:
        config = TrainConfig(loss="triplet", aug=aug, seed=0, epochs=2, lr=0.05, batch_size=25)
        return (
            train_supervised(torch.from_numpy(images), torch.from_numpy(labels), config, device=CPU, progress=False)[0]
            .backbone[0]
            .weight
        )

    plain, views, again = first_conv("none"), first_conv("pad_rotate_scale"), first_conv("pad_rotate_scale")
    assert torch.equal(views, again) and not torch.equal(plain, views)


def test_the_tuned_supervised_baseline_trains_with_adamw_one_cycle_and_augmentation(monkeypatch):
    seen = {}

    def recording(images, labels, config, *, device, progress):
        seen.update(config=config, images=len(images))
        return make_encoder(1), []

    monkeypatch.setattr(baselines_module, "train_supervised", recording)
    images, labels = tiny(10)
    data = {"train_images": images, "train_labels": labels}
    BASELINES["supervised_tuned"].fit(data, settings(anchors=4), CPU, progress=False)
    config = seen["config"]
    assert (config.optimizer, config.lr, config.weight_decay, config.schedule, config.epochs) == (
        "adamw",
        0.01,
        0.05,
        "onecycle",
        10,
    )
    assert (config.aug, config.batch_size, seen["images"]) == ("shift_flip", 8, 40)  # 4 anchors x 10 classes
    BASELINES["supervised"].fit(data, settings(anchors=4), CPU, progress=False)
    assert (seen["config"].aug, seen["config"].optimizer, seen["config"].lr) == ("none", "sgd", 0.15)


def test_a_supervised_representation_is_the_trained_encoders_chosen_features(monkeypatch):
    images, labels = tiny(5)
    torch.manual_seed(0)
    encoder = make_encoder(1)
    monkeypatch.setattr(baselines_module, "train_supervised", lambda *args, **kwargs: (encoder, []))
    represent = BASELINES["supervised"].fit(
        {"train_images": images, "train_labels": labels}, settings(features="backbone"), CPU, progress=False
    )
    np.testing.assert_array_equal(represent(images), embed_images(encoder, images, batch_size=7)["backbone"])


@pytest.mark.parametrize("name, count", [("kmeans_patches", "centroids"), ("random_patches", "filters")])
def test_the_patch_baselines_fit_on_the_training_images_with_the_patches_settings_and_the_seed(
    monkeypatch, name, count
):
    seen = {}

    def recording(train_images, **kwargs):
        seen.update(images=train_images, **kwargs)
        return "the encoder"

    monkeypatch.setattr(patches, name, recording)
    images, labels = tiny(2)
    p = settings(seed=7, centroids=5)
    p["patches"]["size"] = 4
    assert (
        BASELINES[name].fit({"train_images": images, "train_labels": labels}, p, CPU, progress=False) == "the encoder"
    )
    assert seen.pop("images") is images
    assert seen == {count: 5, "size": 4, "seed": 7, "progress": False}
    assert not BASELINES[name].uses_labels
