"""The floor and the ceiling that give a contrastive probe score its meaning.

Each baseline is fitted on the training images (without the held-out ones) into a representation: a function from
uint8 images to features, which the baseline stage applies to the images the scenarios' probe reads (the evaluation
images, and under `probe.protocol: standard` the training images too) and scores with the very same probe (same
seed, same `probe` params). The encoder-based ones give features of the scenarios' kind (`probe.features`):
- `raw_pixels`: the images themselves, scaled to [0, 1] (no learning at all); against backbone
  features, a fixed random projection of them to the backbone's size (so no probe is wider);
- `random_init`: the encoder (`model`) as initialised with the seed, never trained, its BatchNorm
  statistics measured on the clean training images in batches of `train.batch_size`;
- `supervised`: the same encoder trained with labels (cross-entropy through a linear head on its
  embedding) on the same anchors, with the protocol's recipe for the triplet loss (its published
  epochs and learning rate, plain SGD) and `train.batch_size`; no scenario's recipe changes it;
- `supervised_tuned`: the same, trained with a good recipe (AdamW, one-cycle, 10 epochs, fresh
  `shift_flip` views): the ceiling the contrastive methods' tuned recipes are measured against.
The classical label-free ones (`contrastlab.methods.patches`, settings `patches`) have features of their own,
4 x `patches.centroids` wide, and ignore `probe.features` and `model`:
- `kmeans_patches`: k-means centroids of whitened training patches, a triangle activation and sum pooling over the
  image's four quadrants (Coates, Lee & Ng 2011);
- `random_patches`: whitened random training patches as the filters (Thiry et al. 2021).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.infra.params import AUTO
from contrastlab.methods import patches
from contrastlab.methods.encoders import Encoder, make_encoder
from contrastlab.pipeline.embed import embed_images
from contrastlab.pipeline.examples import anchors_and_negatives
from contrastlab.pipeline.preprocess import normalize, to_unit
from contrastlab.pipeline.train import Objective, TrainConfig, fit_whitening, train

Representation = Callable[[np.ndarray], np.ndarray]  # uint8 images (N, C, H, W) -> features (N, width)


def train_supervised(
    images: torch.Tensor, labels: torch.Tensor, config: TrainConfig, *, device: torch.device, progress: bool = True
) -> tuple[Encoder, list[float]]:
    """The encoder trained with cross-entropy through a linear head, in the contrastive methods' training loop
    (`contrastlab.pipeline.train.train`), with `config`'s seed, epochs, batch size, recipe (optimizer, learning rate
    and its schedule) and augmentation (a fresh view of every image each epoch; `none` trains on the images
    themselves): the encoder without the head, and the mean loss of each epoch."""
    n = len(images)
    one_view_each = {
        "members": np.arange(n)[:, None],
        "augmented": np.ones((n, 1), dtype=bool),
        "target": np.zeros(n, dtype=np.float32),
        "labels": labels.numpy()[:, None],
    }
    classes = int(labels.max()) + 1
    cross_entropy = Objective(
        what="the supervised baseline's cross-entropy",
        loss=lambda embeddings, target, labels, options: F.cross_entropy(embeddings[0], labels),
        head=lambda width: nn.Linear(width, classes),
    )
    result = train(images, one_view_each, config, device=device, progress=progress, objective=cross_entropy)
    return result.encoder, result.epoch_losses


def encoder_features(encoder: Encoder, p: dict) -> Representation:
    """The encoder's `probe.features` of images, embedded in eval mode in batches of `embed.batch_size`."""
    return lambda images: embed_images(encoder, images, p["embed"]["batch_size"])[p["probe"]["features"]]


def pixels(images: np.ndarray) -> np.ndarray:
    """The images flattened and scaled to [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255


def raw_pixels(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    if p["probe"]["features"] == "embedding":
        return pixels
    shape = data["train_images"].shape[1:]
    size = untrained(data, p).embed(torch.zeros(2, *shape))["backbone"].shape[1]
    width = int(np.prod(shape))
    projection = np.random.default_rng(p["seed"]).standard_normal((width, size), dtype=np.float32) / np.sqrt(width)
    return lambda images: pixels(images) @ projection


def untrained(data: dict, p: dict) -> Encoder:
    """The scenarios' encoder (`model`, the protocol's sigmoid head) as the seed initialises it (its patch whitening
    set from the training images), in eval mode."""
    torch.manual_seed(p["seed"])
    channels = data["train_images"].shape[1]
    encoder = make_encoder(channels, arch=p["model"]["arch"], embedding_dim=p["model"]["embedding_dim"])
    fit_whitening(encoder, torch.from_numpy(data["train_images"]), p["seed"])
    return encoder.eval()


def calibrate_batchnorm(encoder: nn.Module, images: np.ndarray, batch_size: int) -> None:
    """Set each BatchNorm's running statistics to the mean over batches of its inputs' mean and variance, the
    batches taken in order from `images` (torch's `update_bn`, which keeps each momentum); leaves the encoder in eval
    mode.

    At initialisation they are 0 and 1, so in eval mode an untrained encoder's activations are never
    normalised: its sigmoid embeddings then differ so little that the linear probe scores chance
    (0.11 on MNIST) although a kNN still reads 0.81 from them."""
    device = next(encoder.parameters()).device
    batches = (
        normalize(to_unit(torch.from_numpy(images[start : start + batch_size]).to(device))).contiguous(
            memory_format=torch.channels_last
        )
        for start in range(0, len(images), batch_size)
    )
    torch.optim.swa_utils.update_bn(batches, encoder, device=None)
    encoder.eval()


def random_init(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    # Module.to takes a device and a memory_format at once; torch's overloads do not say so
    encoder = untrained(data, p).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    calibrate_batchnorm(encoder, data["train_images"], p["train"]["batch_size"])  # clean training images, in order
    return encoder_features(encoder, p)


def supervised_representation(
    data: dict, p: dict, device: torch.device, progress: bool, aug: str, recipe: dict
) -> Representation:
    """The encoder trained with labels on the scenarios' anchors, with `aug` and `recipe` (keys of the `train`
    section; the rest, and `auto`, as the protocol trains the triplet loss), as a representation."""
    anchors, _ = anchors_and_negatives(data["train_labels"], p["pairs"]["anchors_per_class"], p["seed"])
    train = {"epochs": AUTO, "lr": AUTO, "batch_size": p["train"]["batch_size"], **recipe}
    config = TrainConfig.from_params(
        {"loss": "triplet", "aug": aug, "seed": p["seed"], "train": train, "model": p["model"]}
    )
    encoder, _ = train_supervised(
        torch.from_numpy(data["train_images"][anchors]),
        torch.from_numpy(data["train_labels"][anchors]),
        config,
        device=device,
        progress=progress,
    )
    return encoder_features(encoder, p)


def supervised(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    """Trained as the protocol trains the triplet loss: its anchors, epochs, learning rate and plain SGD."""
    return supervised_representation(data, p, device, progress, aug="none", recipe={})


# A good supervised recipe for the small encoders, in the family of the contrastive ones' tuned recipe (AdamW,
# one-cycle schedule, 10 epochs), so that "the ceiling" is a real one. Chosen on held-out training images by
# benchmarks/supervised_recipe.py (BENCHMARKS.md): shift_flip beat pad_rotate_scale on CIFAR-10 and tied on
# MNIST; lr 0.01 beat 0.003.
SUPERVISED_RECIPE = {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "schedule": "onecycle", "epochs": 10}
SUPERVISED_AUG = "shift_flip"


def supervised_tuned(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    return supervised_representation(data, p, device, progress, aug=SUPERVISED_AUG, recipe=SUPERVISED_RECIPE)


def kmeans_patches(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    return patches.kmeans_patches(
        data["train_images"],
        centroids=p["patches"]["centroids"],
        size=p["patches"]["size"],
        seed=p["seed"],
        progress=progress,
    )


def random_patches(data: dict, p: dict, device: torch.device, progress: bool = True) -> Representation:
    return patches.random_patches(
        data["train_images"],
        filters=p["patches"]["centroids"],
        size=p["patches"]["size"],
        seed=p["seed"],
        progress=progress,
    )


@dataclass(frozen=True)
class Baseline:
    # (data: {"train_images", "train_labels"}, params.BASELINE's values, device, progress) -> the representation
    fit: Callable[..., Representation]
    label: str  # how the report names it
    family: str  # the report's leaderboard family (contrastlab.study.results.FAMILIES)
    uses_labels: bool = False  # trained with the labels (the report's `labels_used`)


BASELINES: dict[str, Baseline] = {
    "raw_pixels": Baseline(raw_pixels, "raw pixels (logistic regression)", "raw pixels"),
    "random_init": Baseline(random_init, "encoder at random init", "random init"),
    "supervised": Baseline(
        supervised, "encoder trained supervised (cross-entropy)", "supervised ceiling", uses_labels=True
    ),
    "supervised_tuned": Baseline(
        supervised_tuned,
        "encoder trained supervised, AdamW one-cycle + augmentation",
        "supervised ceiling",
        uses_labels=True,
    ),
    "kmeans_patches": Baseline(
        kmeans_patches, "k-means on whitened patches (Coates et al. 2011)", "classical label-free"
    ),
    "random_patches": Baseline(
        random_patches, "random whitened patches as filters (Thiry et al. 2021)", "classical label-free"
    ),
}
