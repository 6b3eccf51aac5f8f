import numpy as np
import pytest
import torch

import contrastlab.train
from contrastlab.model import make_encoder
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


def first_conv_input_and_output_dtype(precision, monkeypatch):
    """What the encoder's first convolution receives, and the dtype it returns, in a run's first step."""
    seen = []

    def recording_encoder(channels):
        encoder = make_encoder(channels)
        encoder[0].register_forward_hook(lambda module, args, out: seen.append((args[0].clone(), out.dtype)))
        return encoder

    monkeypatch.setattr(contrastlab.train, "make_encoder", recording_encoder)
    run(precision=precision, aug="simclr", epochs=1)
    return seen[0]


def test_bf16_autocasts_the_encoder_but_not_the_augmentation(monkeypatch):
    fp32_input, fp32_out = first_conv_input_and_output_dtype("fp32", monkeypatch)
    bf16_input, bf16_out = first_conv_input_and_output_dtype("bf16", monkeypatch)
    assert bf16_input.dtype == torch.float32 and torch.equal(bf16_input, fp32_input)  # the same fp32 views
    assert (fp32_out, bf16_out) == (torch.float32, torch.bfloat16)


def test_bf16_training_learns_and_differs_from_fp32():
    bf16, fp32 = run(precision="bf16", aug="none", epochs=8), run(aug="none", epochs=8)
    assert bf16.epoch_losses[-1] < bf16.epoch_losses[0]
    assert not torch.equal(weights(bf16), weights(fp32))


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="expected one of fp32, bf16"):
        run(precision="fp16")
