import numpy as np
import pytest
import torch

from contrastlab.pairs import build
from contrastlab.train import draw_fixed_views, train
from contrastlab.augment import AUGMENTATIONS

RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(10), 8)
# class-dependent brightness so that training has something to learn
IMAGES = torch.from_numpy(np.clip(LABELS[:, None, None, None] * 25 + RNG.normal(0, 20, (80, 1, 28, 28)), 0, 255).astype(np.uint8))


def run(loss="triplet", aug="simclr", views="fresh", seed=0, epochs=2, precision="fp32"):
    examples = build(LABELS, "triplets" if loss == "triplet" else "pairs", 8, seed=0)
    return train(IMAGES, examples, loss=loss, aug=aug, epochs=epochs, batch_size=16, lr=0.1, views=views,
                 seed=seed, device=torch.device("cpu"), progress=False, precision=precision)


def weights(result):
    return torch.cat([p.detach().flatten() for p in result.encoder.state_dict().values() if p.is_floating_point()])


def test_same_seed_gives_identical_weights_other_seed_does_not():
    a, b, c = run(seed=1), run(seed=1), run(seed=2)
    assert torch.equal(weights(a), weights(b))
    assert not torch.equal(weights(a), weights(c))


@pytest.mark.parametrize("loss", ["pairwise", "triplet"])
def test_training_records_losses_and_throughput(loss):
    result = run(loss=loss, epochs=3)
    assert len(result.epoch_losses) == 3 and all(np.isfinite(result.epoch_losses))
    members = 2 if loss == "pairwise" else 3
    examples = 160 if loss == "pairwise" else 80
    assert result.images_seen == 3 * examples * members
    assert result.images_per_s > 0


def test_loss_goes_down_on_learnable_data():
    result = run(aug="none", epochs=8)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_fixed_views_are_drawn_once_per_augmented_member():
    examples = build(LABELS, "triplets", 8, seed=0)
    members, augmented = torch.from_numpy(examples["members"]), torch.from_numpy(examples["augmented"])
    views, slot = draw_fixed_views(IMAGES, members, augmented, AUGMENTATIONS["simclr"], torch.Generator().manual_seed(0))
    assert views.shape == (80, 1, 28, 28) and views.dtype == torch.uint8
    assert slot[:, 1].tolist() == list(range(80)) and (slot[:, [0, 2]] == -1).all()
    assert not torch.equal(views, IMAGES[members[:, 1]])  # augmented, not copies


def test_once_and_fresh_views_train_differently():
    assert not torch.equal(weights(run(views="once")), weights(run(views="fresh")))


def test_bf16_autocast_trains_fp32_weights_that_differ_from_fp32_training():
    bf16, fp32 = run(precision="bf16", aug="none", epochs=8), run(aug="none", epochs=8)
    assert all(p.dtype == torch.float32 for p in bf16.encoder.state_dict().values() if p.is_floating_point())
    assert bf16.epoch_losses[-1] < bf16.epoch_losses[0]
    assert not torch.equal(weights(bf16), weights(fp32))
