"""Every registered method works with the rest of the pipeline, so registering one is all it takes.

Parametrised over the registries themselves: a new loss, augmentation, dataset or baseline is
tested here the moment its registry line exists, and none of these tests names one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastlab.infra import params
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.encoders import ARCHS, HEADS, load_encoder, make_encoder, save_encoder
from contrastlab.methods.losses import LOSSES
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import FORMATS, OFFICIAL_DIGESTS
from contrastlab.pipeline.examples import BUILDERS, build
from contrastlab.pipeline.train import TrainConfig, train
from project import committed_params

CPU = torch.device("cpu")
LABELS = np.repeat(np.arange(10), 6)
IMAGES = np.random.default_rng(0).integers(0, 256, (60, 1, 28, 28), dtype=np.uint8)


def accepted(key: str, value, head: str | None = None) -> dict:
    """params.yaml's committed defaults with `key` set to `value` (and `train.head` to `head`), validated as a
    scenario."""
    raw = committed_params()
    raw[key] = value
    raw["train"]["head"] = head or raw["train"]["head"]
    return params.validate_all(raw)


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_a_valid_param_and_trains(name):
    loss = LOSSES[name]
    head = loss.heads[0] if loss.heads else "sigmoid"
    assert accepted("loss", name, head)["loss"] == name
    assert loss.examples in BUILDERS and loss.lr > 0 and loss.epochs >= 1 and (loss.heads is None or loss.heads)
    config = TrainConfig(loss=name, aug="simclr", seed=0, epochs=1, lr=loss.lr, batch_size=20, head=head)
    result = train(
        torch.from_numpy(IMAGES), build(LABELS, loss.examples, 6, seed=0), config, device=CPU, progress=False
    )
    assert len(result.epoch_losses) == 1 and np.isfinite(result.epoch_losses[0])


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("loss", ["triplet", "ntxent"])  # three members with BatchNorm per member, and two views
def test_every_arch_is_a_valid_param_trains_and_every_baseline_uses_it(name, loss):
    size = ARCHS[name].embedding_dim or 16
    raw = committed_params()
    raw["model"] = {"arch": name, "embedding_dim": size}
    p = params.validate(raw, params.BASELINE)
    assert p["model"]["arch"] == name
    config = TrainConfig(
        loss=loss, aug="simclr", seed=0, epochs=1, lr=0.01, batch_size=20, arch=name, embedding_dim=size
    )
    result = train(
        torch.from_numpy(IMAGES), build(LABELS, LOSSES[loss].examples, 6, seed=0), config, device=CPU, progress=False
    )
    assert len(result.epoch_losses) == 1 and np.isfinite(result.epoch_losses[0])
    assert result.encoder.embed(torch.zeros(2, 1, 28, 28))["embedding"].shape == (2, size)
    p["pairs"]["anchors_per_class"], p["train"]["batch_size"], p["probe"]["features"] = 6, 20, "backbone"
    data = {"train_images": IMAGES, "train_labels": LABELS}
    for name, baseline in BASELINES.items():  # 256 features: the backbone's, or the patch baselines' 4 x 64 centroids
        assert baseline.fit(data, p, CPU, progress=False)(IMAGES[:7]).shape == (7, 256), name


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_every_augmentation_is_a_valid_param_and_makes_views_in_range(name):
    assert accepted("aug", name)["aug"] == name
    for shape in ((4, 1, 28, 28), (4, 3, 32, 32)):
        views = AUGMENTATIONS[name](torch.randint(0, 256, shape, dtype=torch.uint8), torch.Generator().manual_seed(0))
        assert views.shape == shape and views.dtype == torch.float32
        assert 0 <= views.min() and views.max() <= 1


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_is_a_valid_param_that_can_be_fetched_and_encoded(name):
    spec = DATASETS[name]
    assert accepted("dataset", name)["dataset"] == name
    assert spec.file_format in FORMATS and set(OFFICIAL_DIGESTS[name]) >= {"train", "test"}
    assert len(spec.classes) == len(set(spec.classes)) > 1
    embedding = make_encoder(spec.channels).eval()(torch.zeros(2, spec.channels, spec.size, spec.size))
    assert embedding.shape == (2, 32)


@pytest.mark.parametrize("name", list(HEADS))
def test_every_head_is_a_valid_param_and_its_encoder_survives_saving(name, tmp_path):
    raw = committed_params()
    raw["train"]["head"] = name
    assert params.validate(raw, ("train",))["train"]["head"] == name
    encoder = make_encoder(3, name).eval()
    save_encoder(encoder, {"channels": 3, "head": name}, tmp_path / "encoder.pt")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        out = encoder(x)
        assert out.shape == (4, 32) and torch.isfinite(out).all()
        assert torch.equal(load_encoder(tmp_path / "encoder.pt", CPU).eval()(x), out)


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_is_a_valid_study_baseline_with_a_label(name):
    raw = committed_params()
    raw["study"]["baselines"] = [name]
    assert params.validate(raw, ("study",))["study"]["baselines"] == [name]
    assert BASELINES[name].label
