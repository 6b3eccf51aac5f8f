import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import contrastlab.pipeline.train
from contrastlab.infra.errors import ParamError, TrainingDiverged
from contrastlab.infra.machine import PORTABLE_KERNELS
from contrastlab.infra.progress import EpochProgress
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.encoders import make_encoder
from contrastlab.methods.losses import LOSSES
from contrastlab.pipeline.examples import build
from contrastlab.pipeline.train import (
    Objective,
    TrainConfig,
    checkpoint_key,
    collapse_warnings,
    draw_fixed_views,
    make_optimizer,
    make_schedule,
    stop_if_weights_not_finite,
    torch_settings,
    train,
    weight_norm,
    why_not_compiled,
)

RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(10), 8)
# class-dependent brightness so that training has something to learn
IMAGES = torch.from_numpy(
    np.clip(LABELS[:, None, None, None] * 25 + RNG.normal(0, 20, (80, 1, 28, 28)), 0, 255).astype(np.uint8)
)


CPU = torch.device("cpu")
QUICK = dict(loss="triplet", aug="simclr", seed=0, epochs=2, lr=0.1, batch_size=16)


def run(negatives="label_aware", checkpoint=None, images=IMAGES, **settings):
    """Train on the tiny images with QUICK's settings changed by `settings` (fields of TrainConfig)."""
    config = TrainConfig(**{**QUICK, **settings})
    examples = build(LABELS, LOSSES[config.loss].examples, 8, seed=0, negatives=negatives)
    return train(images, examples, config, device=CPU, progress=False, checkpoint=checkpoint)


def weights(result):
    return torch.cat([p.detach().flatten() for p in result.encoder.state_dict().values() if p.is_floating_point()])


def test_same_seed_gives_identical_weights_other_seed_does_not():
    a, b, c = run(seed=1), run(seed=1), run(seed=2)
    assert torch.equal(weights(a), weights(b))
    assert not torch.equal(weights(a), weights(c))


class IgnoresSettings:
    """Stands in for torch.utils.deterministic: what train() sets on it changes nothing."""

    fill_uninitialized_memory = True


def test_training_leaves_torchs_deterministic_settings_as_it_found_them():
    before = (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory)
    seen = {}

    def recording_loss(members, target, labels, options):
        seen["during"] = (
            torch.are_deterministic_algorithms_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory,
        )
        return LOSSES["triplet"].fn(members, target, labels, options)

    recorded = Objective(what="the recorded triplet loss", loss=recording_loss, head=lambda width: torch.nn.Identity())
    examples = build(LABELS, "triplets", 8, seed=0)
    train(IMAGES, examples, TrainConfig(**{**QUICK, "epochs": 1}), device=CPU, progress=False, objective=recorded)
    assert seen["during"] == (True, False)  # deterministic, without the NaN fill
    assert (torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory) == before


def test_on_cuda_training_sets_deterministic_kernels_and_no_tf32_and_restores_every_setting(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    settings = lambda: (  # noqa: E731
        torch.are_deterministic_algorithms_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
        cudnn.fp32_precision,
        matmul.fp32_precision,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    before = settings()
    with torch_settings(torch.device("cuda"), deterministic=True):  # sets flags only: no GPU needed
        assert settings() == (True, True, False, "ieee", "ieee", ":4096:8")
    assert settings() == before
    with torch_settings(torch.device("cuda"), deterministic=False):
        assert settings() == (False, False, True, "ieee", "ieee", None)  # cuDNN autotunes
    with torch_settings(CPU, deterministic=False):
        assert settings()[0] is True  # the CPU is deterministic whatever the setting
    assert settings() == before


SYNCHRONISING = ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__")  # each makes the host wait


@pytest.fixture
def no_synchronisation_in_warm_steps(monkeypatch):
    """From a training epoch's second step until its last: the project's code calling any of SYNCHRONISING, or indexing
    with a boolean mask (its count is computed on the device: the same wait), fails the test. The losses are read only
    at the end of the epoch."""
    warm: list[bool] = []
    ours = str(Path(contrastlab.pipeline.train.__file__).parents[1])

    def guarded(name, original, refuses=lambda *args: True):
        def call(*args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if warm and caller.startswith(ours) and refuses(*args):
                raise AssertionError(f"{caller}:{sys._getframe(1).f_lineno} synchronises a step ({name})")
            return original(*args, **kwargs)

        return call

    def boolean_index(tensor, index, *value):
        return any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (index if isinstance(index, tuple) else (index,))
        )

    for name in SYNCHRONISING:
        monkeypatch.setattr(torch.Tensor, name, guarded(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "nonzero", guarded("torch.nonzero", torch.nonzero))
    for name in ("__getitem__", "__setitem__"):
        monkeypatch.setattr(
            torch.Tensor, name, guarded(f"a boolean mask in {name}", getattr(torch.Tensor, name), boolean_index)
        )
    iterate = EpochProgress.__iter__

    def steps(self):
        for step, batch in enumerate(iterate(self)):
            warm[:] = [step > 0]
            yield batch
        warm.clear()

    monkeypatch.setattr(EpochProgress, "__iter__", steps)
    monkeypatch.setattr(contrastlab.pipeline.train, "READ_LOSSES_EVERY_S", math.inf)


@pytest.mark.parametrize(
    "settings",
    [
        dict(loss="triplet", aug="pad_rotate_scale"),
        dict(loss="pairwise", aug="shift_flip", views="once"),
        dict(loss="contrastive", aug="none"),
        dict(loss="ntxent", aug="simclr", arch="vgg_small", small_crops=2),
        dict(loss="vicreg", aug="simclr", head="linear", arch="airbench_small", lr=0.001),
        dict(loss="barlow_twins", aug="simclr", precision="bf16"),
    ],
)
def test_a_warm_training_step_never_makes_the_host_wait_for_the_device(no_synchronisation_in_warm_steps, settings):
    result = run(**{**settings, "epochs": 1, "batch_size": 8})  # 10 steps or more per epoch
    assert len(result.step_losses) >= 10


def test_hard_negative_mining_never_makes_the_host_wait_for_the_device(no_synchronisation_in_warm_steps):
    assert len(run(negatives="hard", epochs=1, batch_size=8).step_losses) == 10


def test_losses_are_read_back_in_groups_and_stop_training_at_the_first_one_not_finite(monkeypatch):
    monkeypatch.setattr(contrastlab.pipeline.train, "READ_LOSSES_EVERY_S", math.inf)  # once, at the end of the epoch
    steps = []

    def nan_at_step_3(members, target, labels, options):
        steps.append(len(steps) + 1)
        value = LOSSES["triplet"].fn(members, target, labels, options)
        return value * math.nan if len(steps) == 3 else value

    poisoned = Objective(what="the poisoned loss", loss=nan_at_step_3, head=lambda width: torch.nn.Identity())
    config = TrainConfig(**{**QUICK, "epochs": 1, "batch_size": 8})
    with pytest.raises(TrainingDiverged, match=r"the poisoned loss became nan at epoch 1, step 3 "):
        train(IMAGES, build(LABELS, "triplets", 8, seed=0), config, device=CPU, progress=False, objective=poisoned)
    assert steps == list(range(1, 11))  # the epoch ran on; its losses were read together at its end


def test_fp16_is_refused_off_cuda_before_training(monkeypatch):
    monkeypatch.setattr(contrastlab.pipeline.train, "make_encoder", None)  # training would call it first
    with pytest.raises(
        ParamError, match=r"^params.yaml: train.precision=fp16 runs on CUDA GPUs only, and this training runs on cpu"
    ):
        run(precision="fp16")


@pytest.mark.parametrize("loss", ["triplet", "ntxent"])
def test_skipping_the_nan_fill_of_new_tensors_leaves_the_weights_unchanged(monkeypatch, loss):
    without_fill = run(loss=loss, seed=3)
    torch.utils.deterministic.fill_uninitialized_memory = True
    monkeypatch.setattr(torch.utils, "deterministic", IgnoresSettings())
    with_fill = run(loss=loss, seed=3)
    assert torch._C._get_deterministic_fill_uninitialized_memory()  # this run did fill with NaN
    monkeypatch.undo()
    assert torch.equal(weights(without_fill), weights(with_fill))


@pytest.mark.parametrize(
    "loss, examples, members",
    [
        ("pairwise", 160, 2),
        ("triplet", 80, 3),
        ("contrastive", 160, 2),
        ("ntxent", 80, 2),
        ("supcon", 80, 2),
        ("vicreg", 80, 2),
        ("barlow_twins", 80, 2),
    ],
)
def test_training_records_losses_and_throughput(loss, examples, members):
    result = run(loss=loss, epochs=3, lr=LOSSES[loss].lr, head="linear" if loss == "vicreg" else "sigmoid")
    assert len(result.epoch_losses) == 3 and all(np.isfinite(result.epoch_losses))
    assert result.images_seen == 3 * examples * members
    assert result.images_per_s > 0


def test_training_logged_to_a_file_prints_one_line_per_epoch_with_its_loss(capsys):
    config = TrainConfig(**{**QUICK, "epochs": 3})
    result = train(IMAGES, build(LABELS, "triplets", 8, seed=0), config, device=CPU)  # stdout captured: no terminal
    out = capsys.readouterr().out
    assert "\r" not in out
    lines = out.splitlines()
    assert len(lines) == 3
    for epoch, (line, loss) in enumerate(zip(lines, result.epoch_losses, strict=True), start=1):
        assert re.fullmatch(rf"epoch {epoch}/3: loss {loss:.4f}, [\d,]+ images/s", line), line


def test_loss_goes_down_on_learnable_data():
    result = run(aug="none", epochs=8)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_fixed_views_are_drawn_once_per_augmented_member():
    examples = build(LABELS, "triplets", 8, seed=0)
    members, augmented = torch.from_numpy(examples["members"]), torch.from_numpy(examples["augmented"])
    views, slot = draw_fixed_views(
        IMAGES, members, augmented, AUGMENTATIONS["simclr"], torch.Generator().manual_seed(0)
    )
    assert views.shape == (80, 1, 28, 28) and views.dtype == torch.uint8
    assert slot[:, 1].tolist() == list(range(80)) and (slot[:, [0, 2]] == -1).all()
    assert not torch.equal(views, IMAGES[members[:, 1]])  # augmented, not copies


def test_once_and_fresh_views_train_differently():
    assert not torch.equal(weights(run(views="once")), weights(run(views="fresh")))


def first_conv_input_and_output_dtype(precision, monkeypatch):
    """What the encoder's first convolution receives, and the dtype it returns, in a run's first step."""
    seen = []

    def recording_encoder(**design):
        encoder = make_encoder(**design)
        encoder.backbone[0].register_forward_hook(lambda module, args, out: seen.append((args[0].clone(), out.dtype)))
        return encoder

    monkeypatch.setattr(contrastlab.pipeline.train, "make_encoder", recording_encoder)
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
    with pytest.raises(ValueError, match="expected one of fp32, bf16, fp16"):
        run(precision="fp8")


def test_compiled_training_computes_what_uncompiled_training_does(capsys):
    compiled, eager = run(compile=True, aug="none", batch_size=24), run(aug="none", batch_size=24)  # 80 = 3 x 24 + 8
    assert capsys.readouterr().out == ""  # no progress asked for
    train(IMAGES, build(LABELS, "triplets", 8, seed=0), TrainConfig(**{**QUICK, "compile": True}), device=CPU)
    assert "compiles the encoder" in capsys.readouterr().out
    assert compiled.compiled and not eager.compiled
    assert type(compiled.encoder) is type(eager.encoder)  # the module itself: its state_dict saves as always
    assert compiled.encoder.state_dict().keys() == eager.encoder.state_dict().keys()
    np.testing.assert_allclose(compiled.epoch_losses, eager.epoch_losses, rtol=1e-5)
    # fused kernels round differently: close relative to each weight and, near 0, to the weights' scale
    scale = float(weights(eager).abs().max())
    torch.testing.assert_close(weights(compiled), weights(eager), rtol=1e-4, atol=1e-5 * scale)


def test_compile_without_a_cpp_compiler_trains_uncompiled_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(contrastlab.pipeline.train, "cpp_compiler", lambda: None)
    fallback, eager = run(compile=True), run()
    assert "no C++ compiler found" in capsys.readouterr().out
    assert not fallback.compiled
    assert torch.equal(weights(fallback), weights(eager))


def test_compile_on_a_gpu_without_triton_is_said_in_one_line_before_training(monkeypatch):
    monkeypatch.setattr(contrastlab.pipeline.train, "has_triton", lambda: False)
    assert why_not_compiled(torch.device("cuda")) == (
        "Triton, which torch.compile needs for a GPU, is not installed (pip install triton)"
    )
    monkeypatch.setattr(contrastlab.pipeline.train, "has_triton", lambda: True)
    assert why_not_compiled(torch.device("cuda")) is None


def test_hard_negatives_change_training_and_still_learn():
    hard, label_aware = run(aug="none", epochs=8, negatives="hard"), run(aug="none", epochs=8)
    assert hard.epoch_losses[-1] < hard.epoch_losses[0]
    assert not torch.equal(weights(hard), weights(label_aware))


@pytest.mark.parametrize("loss, head", [("vicreg", "linear"), ("barlow_twins", "linear"), ("ntxent", "l2")])
def test_label_free_losses_learn_on_the_tiny_images(loss, head):
    result = run(
        loss=loss, head=head, aug="none", epochs=8, arch="vgg_small", embedding_dim=64, optimizer="adamw", lr=0.003
    )
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_small_crops_are_more_views_each_against_both_full_views(monkeypatch):
    shapes, pairs = [], []
    real_multi_crop = contrastlab.pipeline.train.multi_crop

    def recording(loss_fn, full, small, *args):
        shapes.append([tuple(x.shape) for x in small])
        pairs.append(1 + 2 * len(small))
        return real_multi_crop(loss_fn, full, small, *args)

    monkeypatch.setattr(contrastlab.pipeline.train, "multi_crop", recording)
    crops = dict(loss="ntxent", head="l2", arch="vgg_small", epochs=1)
    result = run(**crops, small_crops=3, small_crop_size=12)
    assert result.images_seen == 80 * (2 + 3)
    assert shapes[0] == [(16, 32)] * 3 and pairs[0] == 7  # 3 crops of the 16 images, each embedded to 32 numbers
    assert not torch.equal(weights(result), weights(run(**crops)))


def test_the_airbench_encoder_trains_from_whitening_set_by_the_training_images():
    recipe = dict(
        loss="vicreg",
        head="linear",
        arch="airbench",
        embedding_dim=64,
        epochs=1,
        small_crops=2,
        optimizer="adamw",
        lr=0.003,
    )
    result = run(**recipe)
    whitening = result.encoder.backbone[0]
    assert np.isfinite(result.epoch_losses).all() and not whitening.weight.requires_grad
    brighter = run(**recipe, images=IMAGES // 2)
    assert not torch.equal(whitening.weight, brighter.encoder.backbone[0].weight)  # set from the images trained on


def test_l2_head_gives_unit_embeddings():
    result = run(head="l2")
    out = result.encoder.eval()(torch.randn(4, 1, 28, 28))
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)


def lrs(steps_per_epoch=2, epochs=4, **recipe) -> list[float]:
    """The learning rate used at each optimizer step with lr 1 and the recipe's settings."""
    config = TrainConfig(**{**QUICK, "lr": 1.0, "epochs": epochs, **recipe})
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config)
    schedule = make_schedule(optimizer, config, steps_per_epoch)
    seen = []
    for _ in range(steps_per_epoch * epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return seen


def test_protocol_recipe_is_plain_sgd_at_a_constant_rate():
    protocol = TrainConfig(**QUICK)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], protocol)
    assert make_schedule(optimizer, protocol, 2) is None
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.defaults["momentum"], optimizer.defaults["weight_decay"]) == (0.0, 0.0)
    assert lrs() == [1.0] * 8


def test_warmup_then_cosine_by_hand():
    got = lrs(schedule="cosine", warmup_epochs=1)  # 2 warm-up steps, then 6 cosine steps to 0
    cosine = [0.5 * (1 + np.cos(np.pi * t / 6)) for t in range(6)]
    assert got == pytest.approx([0.5, 1.0, *cosine])


def test_warmup_alone_ramps_linearly_then_holds():
    assert lrs(warmup_epochs=2) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_onecycle_rises_to_the_rate_then_falls_far_below():
    got = lrs(optimizer="adamw", schedule="onecycle", steps_per_epoch=10, epochs=2)
    assert got[0] == pytest.approx(1.0 / 25) and max(got) == pytest.approx(1.0, rel=0.05)
    assert got.index(max(got)) == 5 and got[-1] < 0.01  # peak at 30% of 20 steps


def test_adamw_with_weight_decay_trains_differently_from_sgd():
    adamw = run(optimizer="adamw", weight_decay=0.05)
    assert not torch.equal(weights(adamw), weights(run()))


class Killed(BaseException):
    """Stands for the process dying right after a checkpoint was written."""


def interrupted_after_first_checkpoint(monkeypatch, **options):
    """Run training with a checkpoint and "kill" it once the first epoch's state is on disk."""
    save = contrastlab.pipeline.train.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise Killed

    monkeypatch.setattr(contrastlab.pipeline.train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(**options)
    monkeypatch.setattr(contrastlab.pipeline.train, "save_checkpoint", save)


@pytest.mark.parametrize(
    "options",
    [
        dict(views="fresh"),
        dict(views="once", aug="pad_rotate_scale"),
        dict(optimizer="adamw", schedule="onecycle", weight_decay=0.01),
        dict(momentum=0.9, schedule="cosine", warmup_epochs=1, loss="ntxent"),
    ],
)
def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch, capsys, options):
    uninterrupted = run(epochs=3, **options)
    checkpoint = tmp_path / "train-checkpoint.pt"
    interrupted_after_first_checkpoint(monkeypatch, epochs=3, checkpoint=checkpoint, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-checkpoint.pt"]  # no partial file left

    resumed = run(epochs=3, checkpoint=checkpoint, **options)
    assert "resuming from" in capsys.readouterr().out
    assert torch.equal(weights(resumed), weights(uninterrupted))
    assert resumed.epoch_losses == uninterrupted.epoch_losses
    assert resumed.images_seen == uninterrupted.images_seen
    assert resumed.step_losses == uninterrupted.step_losses


def test_a_run_killed_after_its_last_checkpoint_keeps_the_last_epochs_step_losses(tmp_path, monkeypatch, capsys):
    uninterrupted = run(epochs=1)
    checkpoint = tmp_path / "train-checkpoint.pt"
    interrupted_after_first_checkpoint(monkeypatch, epochs=1, checkpoint=checkpoint)
    resumed = run(epochs=1, checkpoint=checkpoint)  # trains no step: the collapse check reads the checkpoint's
    assert "after epoch 1 of 1" in capsys.readouterr().out
    assert resumed.step_losses == uninterrupted.step_losses and len(resumed.step_losses) == 5


def test_a_checkpoint_of_other_params_is_ignored(tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "train-checkpoint.pt"
    interrupted_after_first_checkpoint(monkeypatch, epochs=3, checkpoint=checkpoint, seed=1)
    result = run(epochs=3, checkpoint=checkpoint, seed=2)
    assert "belongs to other data or params; training from the start" in capsys.readouterr().out
    assert torch.equal(weights(result), weights(run(epochs=3, seed=2)))


def test_an_unreadable_checkpoint_is_ignored(tmp_path, capsys):
    checkpoint = tmp_path / "train-checkpoint.pt"
    checkpoint.write_bytes(b"half a checkpoint")
    result = run(checkpoint=checkpoint)
    assert "ignoring unreadable checkpoint" in capsys.readouterr().out
    assert torch.equal(weights(result), weights(run()))


def test_a_loss_that_turns_nan_stops_training_with_the_step_and_advice():
    with pytest.raises(TrainingDiverged) as caught:
        run(aug="none", head="l2", lr=1e38)
    assert str(caught.value) == (
        "training diverged: the triplet loss became nan at epoch 1, step 2 (lr 1e+38, sgd); "
        "lower train.lr or change the recipe"
    )


def test_weights_that_turn_non_finite_after_the_last_step_stop_training_too():
    with pytest.raises(TrainingDiverged) as caught:
        run(aug="none", lr=float("inf"), epochs=1, batch_size=80)  # one step: its loss is still finite
    assert str(caught.value) == (
        "training diverged: the encoder's weight backbone.0.weight became -inf in epoch 1 "
        "(lr inf, sgd); lower train.lr or change the recipe"
    )


def test_a_running_variance_that_overflows_stops_training_though_every_weight_is_finite():
    with pytest.raises(TrainingDiverged) as caught:
        run(lr=1e12, epochs=1)  # issue 18: the sigmoid head keeps the loss finite, BatchNorm's variance overflows
    assert str(caught.value) == (
        "training diverged: the encoder's buffer backbone.3.running_var became inf in epoch 1 "
        "(lr 1000000000000.0, sgd); lower train.lr or change the recipe"
    )


@pytest.mark.parametrize(
    "name, value, kind",
    [("backbone.6.running_mean", float("nan"), "buffer"), ("projection.0.weight", float("-inf"), "weight")],
)
def test_the_finite_check_covers_the_whole_state_dict_and_names_the_tensor(name, value, kind):
    encoder = make_encoder(channels=1, head="sigmoid", arch="study", embedding_dim=32)
    stop_if_weights_not_finite(encoder, 3, TrainConfig(**QUICK))  # a fresh encoder is finite
    with torch.no_grad():
        encoder.state_dict()[name].view(-1)[5] = value
    with pytest.raises(TrainingDiverged) as caught:
        stop_if_weights_not_finite(encoder, 3, TrainConfig(**QUICK))
    assert str(caught.value) == (
        f"training diverged: the encoder's {kind} {name} became {value} in epoch 3 "
        "(lr 0.1, sgd); lower train.lr or change the recipe"
    )


def test_weight_norm_is_the_norm_of_all_weights_together_in_float64():
    layer = torch.nn.Linear(2, 1)  # weights (3e30, 4e30) and bias 0: squares overflow float32, not float64
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3e30, 4e30]]))
        layer.bias.zero_()
    assert weight_norm(layer) == pytest.approx(5e30, rel=1e-6)


TRIPLET = TrainConfig(**QUICK)


def test_a_collapse_is_a_weight_norm_grown_over_100_fold_and_a_loss_that_stopped_moving():
    # the last half of the steps: 1.0, 1.0, 1.0005: they move 5e-4, within 1e-3 of their mean 1.00017
    steps = [0.5, 0.9, 1.0, 1.0, 1.0005]
    assert collapse_warnings(2.0, 300.0, steps, "the triplet loss", TRIPLET) == [
        "the encoder likely collapsed: its weights' norm grew 150-fold while the triplet loss stayed at 1.0002 over "
        "the last 3 steps (lr 0.1, sgd); lower train.lr or change the recipe"
    ]
    assert collapse_warnings(2.0, 199.0, steps, "the triplet loss", TRIPLET) == []  # grew 99.5-fold
    assert (
        collapse_warnings(2.0, 300.0, [0.5, 0.9, 1.0, 1.0, 1.0015], "the triplet loss", TRIPLET) == []
    )  # moved 1.5e-3
    assert collapse_warnings(2.0, 300.0, [1.0], "the triplet loss", TRIPLET) == []  # one step: no second half to judge
    assert collapse_warnings(2.0, 300.0, [0.3, 0.0, 0.0], "the triplet loss", TRIPLET)[0].startswith(
        "the encoder likely collapsed: its weights' norm grew 150-fold while the triplet loss stayed at 0.0000 "
    )


def test_a_healthy_training_has_no_warnings():
    result = run(epochs=2)
    assert result.warnings == [] and len(result.step_losses) == 5  # 80 triplets in batches of 16


@pytest.mark.parametrize("loss", list(LOSSES))
def test_config_from_params_takes_auto_epochs_and_lr_from_the_loss(loss):
    train_params = {"epochs": "auto", "lr": "auto", "batch_size": 64, "head": "l2", "checkpoint": True}
    config = TrainConfig.from_params({"loss": loss, "aug": "none", "seed": 3, "train": train_params})
    assert (config.epochs, config.lr) == (LOSSES[loss].epochs, LOSSES[loss].lr)
    assert (config.loss, config.seed, config.batch_size, config.head) == (loss, 3, 64, "l2")
    assert (config.optimizer, config.schedule) == ("sgd", "constant")  # keys not given keep the protocol's
    explicit = TrainConfig.from_params(
        {"loss": loss, "aug": "none", "seed": 3, "train": {**train_params, "epochs": 7, "lr": 0.01}}
    )
    assert (explicit.epochs, explicit.lr) == (7, 0.01)


def test_the_checkpoint_key_follows_config_data_and_the_training_code(tmp_path, monkeypatch):
    for name in PORTABLE_KERNELS:  # native kernels, whatever this shell exported
        monkeypatch.delenv(name, raising=False)
    examples = build(LABELS, "triplets", 8, seed=0)
    key = checkpoint_key(IMAGES, examples, TrainConfig(**QUICK), CPU)
    assert key == checkpoint_key(IMAGES, examples, TrainConfig(**QUICK), CPU)
    assert key != checkpoint_key(IMAGES, examples, TrainConfig(**{**QUICK, "margin": 2.0}), CPU)
    assert key != checkpoint_key(IMAGES + 1, examples, TrainConfig(**QUICK), CPU)
    for name, value in PORTABLE_KERNELS.items():  # `cpu_kernels: portable`: not the run a native checkpoint holds
        monkeypatch.setenv(name, value)
    assert key != checkpoint_key(IMAGES, examples, TrainConfig(**QUICK), CPU)
    for name in PORTABLE_KERNELS:
        monkeypatch.delenv(name)
    code = tmp_path / "losses.py"
    code.write_text("one version")
    monkeypatch.setattr(contrastlab.pipeline.train, "closure", lambda modules: [code])
    before = checkpoint_key(IMAGES, examples, TrainConfig(**QUICK), CPU)
    code.write_text("another version")
    assert checkpoint_key(IMAGES, examples, TrainConfig(**QUICK), CPU) != before
