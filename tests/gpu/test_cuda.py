"""Training, the losses, the augmentations and the encoders on a CUDA GPU: everything the CPU suite checks that a GPU
could break (mixed precision, cuDNN's and cuBLAS's kernels, deterministic mode, checkpoints moved between devices).

Skipped where torch sees no CUDA device. `benchmarks/gpu_check.py` runs this file on a GPU machine. Every test names
the device itself (`CUDA`, or CONTRASTLAB_DEVICE=cuda for a stage in a subprocess): the suite's default device is the
CPU. The data is the CPU suite's tiny class-brightness images, so each training takes well under a second.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import contrastlab.pipeline.train
from contrastlab.infra.errors import ParamError
from contrastlab.infra.files import read_metrics, save_npz
from contrastlab.infra.machine import DEVICE_ENV, pick_device
from contrastlab.infra.params import PRECISIONS
from contrastlab.methods.augmentations import (
    AUGMENTATIONS,
    JitterParams,
    color_jitter_,
    gaussian_blur3,
    grayscale_,
    resized_crop_flip,
    rotate_zoomed_out,
    sample_blur_sigma,
    sample_crop_boxes,
    sample_jitter_params,
    sample_rotation_degrees,
    shifted_crop,
    small_crops,
)
from contrastlab.methods.encoders import ARCHS, load_encoder, make_encoder, save_encoder, whitening_layers
from contrastlab.methods.losses import LOSSES, LossOptions, semi_hard_negatives
from contrastlab.pipeline.datasets import content_digest
from contrastlab.pipeline.examples import build
from contrastlab.pipeline.preprocess import normalize, to_unit
from contrastlab.pipeline.train import CUBLAS_WORKSPACE, Objective, TrainConfig, torch_settings, train
from project import ROOT, committed_params

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
RNG = np.random.default_rng(0)
LABELS = np.repeat(np.arange(10), 8)
# class-dependent brightness so that training has something to learn (as tests/pipeline/test_train.py)
IMAGES = torch.from_numpy(
    np.clip(LABELS[:, None, None, None] * 25 + RNG.normal(0, 20, (80, 1, 28, 28)), 0, 255).astype(np.uint8)
)
QUICK = dict(loss="triplet", aug="simclr", seed=0, epochs=1, lr=0.1, batch_size=16)
# fp32 on CUDA is IEEE fp32 (no TF32), so it differs from the CPU by rounding alone: relative to the output's scale,
# the encoders' fp32 forward passes differ from float64 by at most 2e-6 (measured on the CPU); TF32 would be ~1e-4
FP32_SCALED_ATOL = 5e-5


def cuda_run(negatives: str = "label_aware", checkpoint=None, **settings):
    """Train on CUDA on the tiny images with QUICK's settings changed by `settings` (fields of TrainConfig)."""
    config = TrainConfig(**{**QUICK, **settings})
    examples = build(LABELS, LOSSES[config.loss].examples, 8, seed=0, negatives=negatives)
    return train(IMAGES, examples, config, device=CUDA, progress=False, checkpoint=checkpoint)


def weights(result) -> torch.Tensor:
    """Every floating-point tensor of the encoder's state (weights and BatchNorm statistics), on the CPU."""
    return torch.cat(
        [t.detach().flatten().cpu() for t in result.encoder.state_dict().values() if t.is_floating_point()]
    )


def head_for(loss: str) -> str:
    """The protocol's sigmoid head, or the first head the loss can learn through (vicreg: linear)."""
    heads = LOSSES[loss].heads
    return heads[0] if heads else "sigmoid"


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal up to fp32 rounding: relative to each value and, near 0, to the largest value's size."""
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(
        actual.cpu(), expected.cpu(), rtol=1e-5, atol=FP32_SCALED_ATOL * scale, msg=lambda m: f"{what}: {m}"
    )


# --- every loss, augmentation, encoder and precision trains on the GPU -----------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("aug", sorted(AUGMENTATIONS))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_augmentation_encoder_and_precision_trains_an_epoch_on_cuda(loss, aug, arch, precision):
    result = cuda_run(
        loss=loss, aug=aug, arch=arch, precision=precision, head=head_for(loss), lr=LOSSES[loss].lr, batch_size=32
    )
    assert len(result.epoch_losses) == 1 and all(map(math.isfinite, result.step_losses))
    state = result.encoder.state_dict()
    assert {tensor.device.type for tensor in state.values()} == {"cuda"}
    assert {tensor.dtype for tensor in state.values() if tensor.is_floating_point()} == {torch.float32}  # autocast
    assert torch.isfinite(weights(result)).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_loss_goes_down_on_learnable_data_on_cuda_in_every_precision(precision):
    # the CPU suite's learning check (test_loss_goes_down_on_learnable_data): triplet, no augmentation, 8 epochs
    result = cuda_run(aug="none", epochs=8, precision=precision)
    assert result.epoch_losses[-1] < result.epoch_losses[0], result.epoch_losses


def test_multi_crop_trains_on_cuda():
    result = cuda_run(loss="ntxent", head="l2", arch="vgg_small", small_crops=2, small_crop_size=12, precision="bf16")
    assert result.images_seen == 80 * (2 + 2) and all(map(math.isfinite, result.step_losses))


# --- torch's settings while training on CUDA ---------------------------------------------------------------------


@pytest.mark.parametrize("deterministic", [True, False])
def test_training_on_cuda_sets_determinism_as_asked_then_restores_torchs_settings(deterministic):
    cudnn = torch.backends.cudnn

    def settings() -> tuple:
        return (
            torch.are_deterministic_algorithms_enabled(),
            cudnn.deterministic,
            cudnn.benchmark,
            cudnn.fp32_precision,
            torch.backends.cuda.matmul.fp32_precision,
            {name: os.environ.get(name) for name in CUBLAS_WORKSPACE},
        )

    seen = []

    def recording_triplet(members, target, labels, options):
        seen.append(settings())
        return LOSSES["triplet"].fn(members, target, labels, options)

    before = settings()
    recorded = Objective(
        what="the recorded triplet loss", loss=recording_triplet, head=lambda width: torch.nn.Identity()
    )
    examples = build(LABELS, "triplets", 8, seed=0)
    config = TrainConfig(**{**QUICK, "deterministic": deterministic})
    train(IMAGES, examples, config, device=CUDA, progress=False, objective=recorded)
    # deterministic mode fixes cuBLAS's workspace unless the environment already chose one
    workspace = {
        name: before[5][name] or (value if deterministic else None) for name, value in CUBLAS_WORKSPACE.items()
    }
    assert seen[0] == (deterministic, deterministic, not deterministic, "ieee", "ieee", workspace)
    assert settings() == before


def test_fp32_matrix_products_and_convolutions_on_cuda_are_ieee_fp32_not_tf32():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 2048, generator=generator), torch.randn(2048, 512, generator=generator)
    images, kernels = torch.randn(8, 256, 16, 16, generator=generator), torch.randn(64, 256, 3, 3, generator=generator)
    with torch_settings(CUDA):
        product = (a.to(CUDA) @ b.to(CUDA)).cpu()
        convolved = torch.nn.functional.conv2d(images.to(CUDA), kernels.to(CUDA), padding=1).cpu()
    exact_product = (a.double() @ b.double()).float()
    exact_convolved = torch.nn.functional.conv2d(images.double(), kernels.double(), padding=1).float()
    # 2048 products summed: IEEE fp32 errs ~1e-7 of the result's scale, TF32's 10-bit mantissa ~1e-4
    for found, exact, what in ((product, exact_product, "matmul"), (convolved, exact_convolved, "conv2d")):
        error = float((found - exact).abs().max() / exact.abs().max())
        assert error < 1e-5, f"{what} on CUDA errs {error:.1e} of its scale: TF32?"


# --- the GPU computes what the CPU computes ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_encoder_computes_on_cuda_what_it_computes_on_the_cpu(arch, mode):
    torch.manual_seed(0)
    on_cpu = make_encoder(1, head="linear", arch=arch)
    x = normalize(to_unit(IMAGES[:32]))
    for layer in whitening_layers(on_cpu):
        layer.fit(x)
    on_gpu = copy.deepcopy(on_cpu).to(CUDA)
    on_cpu.train(mode == "train")
    on_gpu.train(mode == "train")
    with torch_settings(CUDA), torch.no_grad():
        expected, found = on_cpu.embed(x), on_gpu.embed(x.to(CUDA))
    for what in ("embedding", "backbone"):
        assert found[what].device.type == "cuda"
        assert_close_to_scale(found[what], expected[what], f"{arch} {what}")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_and_its_gradient_on_cuda_match_the_cpu(name):
    generator = torch.Generator().manual_seed(0)
    count = {"pairs": 2, "triplets": 3, "views": 2}[LOSSES[name].examples]
    members = [torch.rand(32, 32, generator=generator) for _ in range(count)]  # as the sigmoid head's embeddings
    target, labels = torch.tensor([1.0, -1.0]).repeat(16), torch.arange(32) % 10

    def loss_and_gradients(device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = [member.clone().to(device).requires_grad_() for member in members]
        loss = LOSSES[name].fn(inputs, target.to(device), labels.to(device), LossOptions())
        loss.backward()
        return loss.detach(), [member.grad for member in inputs]

    with torch_settings(CUDA):
        expected_loss, expected_gradients = loss_and_gradients(CPU)
        loss, gradients = loss_and_gradients(CUDA)
    assert loss.device.type == "cuda"
    torch.testing.assert_close(loss.cpu(), expected_loss, rtol=1e-5, atol=1e-6)
    for index, (gradient, expected) in enumerate(zip(gradients, expected_gradients, strict=True)):
        assert_close_to_scale(gradient, expected, f"{name}'s gradient of member {index}")


def test_semi_hard_mining_picks_the_same_negatives_on_cuda():
    generator = torch.Generator().manual_seed(0)
    anchor, positive, pool = (torch.rand(n, 32, generator=generator) for n in (32, 32, 64))
    anchor_labels, pool_labels = torch.arange(32) % 10, torch.arange(64) % 10
    expected = semi_hard_negatives(anchor, positive, pool, anchor_labels, pool_labels, margin=1.0)
    with torch_settings(CUDA):
        found = semi_hard_negatives(
            *(t.to(CUDA) for t in (anchor, positive, pool, anchor_labels, pool_labels)), margin=1.0
        )
    assert torch.equal(found.cpu(), expected)  # rows of the same pool: the same choice gives the same bytes


def drawn_parameters(batch: int, size: int, generator: torch.Generator) -> dict:
    """One draw of every augmentation step's random parameters, on the CPU."""
    return {
        "boxes": sample_crop_boxes(batch, size, size, generator),
        "flip": torch.rand(batch, generator=generator) < 0.5,
        "degrees": sample_rotation_degrees(batch, generator),
        "jitter": sample_jitter_params(batch, generator, p=0.9),
        "gray": torch.rand(batch, generator=generator) < 0.5,
        "sigma": sample_blur_sigma(batch, generator),
        "top": torch.randint(0, 9, (batch,), generator=generator),
        "left": torch.randint(0, 9, (batch,), generator=generator),
    }


# The deterministic steps the registered augmentations are made of, given their parameters `p`.
AUGMENTATION_STEPS = {
    "resized_crop_flip": lambda x, p: resized_crop_flip(x, p["boxes"], p["flip"]),
    "resized_crop_flip to 16 pixels": lambda x, p: resized_crop_flip(x, p["boxes"], p["flip"], size=16),
    "rotate_zoomed_out": lambda x, p: rotate_zoomed_out(x, p["degrees"]),
    "color_jitter_": lambda x, p: color_jitter_(x.clone(), p["jitter"]),
    "grayscale_": lambda x, p: grayscale_(x.clone(), p["gray"]),
    "gaussian_blur3": lambda x, p: gaussian_blur3(x, p["sigma"]),
    "shifted_crop": lambda x, p: shifted_crop(x, p["top"], p["left"], padding=4),
}


def on_device(parameters: dict, device: torch.device) -> dict:
    return {
        name: JitterParams(*(t.to(device) for t in value)) if isinstance(value, JitterParams) else value.to(device)
        for name, value in parameters.items()
    }


@pytest.mark.parametrize("step", sorted(AUGMENTATION_STEPS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_every_augmentation_step_computes_on_cuda_what_it_computes_on_the_cpu(step, channels, size):
    generator = torch.Generator().manual_seed(0)
    x01 = to_unit(torch.randint(0, 256, (16, channels, size, size), dtype=torch.uint8, generator=generator))
    parameters = drawn_parameters(16, size, generator)
    with torch_settings(CUDA):
        expected = AUGMENTATION_STEPS[step](x01, parameters)
        found = AUGMENTATION_STEPS[step](x01.to(CUDA), on_device(parameters, CUDA))
    assert found.device.type == "cuda"
    torch.testing.assert_close(found.cpu(), expected, rtol=0, atol=1e-5)  # pixels in [0, 1]


def cuda_images(channels: int, size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (16, channels, size, size), dtype=torch.uint8, generator=generator).to(CUDA)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_every_augmentation_draws_on_the_gpu_and_repeats_from_its_seed(name, channels, size):
    images = cuda_images(channels, size)
    with torch_settings(CUDA):
        first = AUGMENTATIONS[name](images, torch.Generator(CUDA).manual_seed(3))
        again = AUGMENTATIONS[name](images, torch.Generator(CUDA).manual_seed(3))
    assert first.device.type == "cuda" and first.dtype == torch.float32 and first.shape == images.shape
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, again)


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_small_crops_are_drawn_on_the_gpu(channels, size):
    with torch_settings(CUDA):
        crops = small_crops(cuda_images(channels, size), torch.Generator(CUDA).manual_seed(3), count=2, size=12)
    assert crops.shape == (32, channels, 12, 12) and crops.device.type == "cuda"
    assert 0 <= float(crops.min()) and float(crops.max()) <= 1


# --- the same seed, the same weights; a resumed run, the uninterrupted weights -----------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        dict(negatives="hard"),  # triplet, study encoder, semi-hard negatives mined in the batch
        dict(loss="ntxent", head="l2", arch="vgg_small"),
        dict(loss="supcon", arch="vgg_small", precision="bf16"),
        dict(loss="pairwise", aug="pad_rotate_scale", precision="fp16"),
        dict(loss="vicreg", head="linear", arch="vgg_small", aug="shift_flip", optimizer="adamw", lr=0.003),
    ],
    ids=["triplet-hard-study", "ntxent-vgg_small", "supcon-vgg_small-bf16", "pairwise-fp16", "vicreg-vgg_small"],
)
def test_the_same_seed_gives_identical_weights_on_cuda_in_deterministic_mode(settings):
    first = cuda_run(epochs=2, **settings)
    again = cuda_run(epochs=2, **settings)
    other = cuda_run(epochs=2, seed=1, **settings)
    assert torch.equal(weights(first), weights(again))
    assert first.epoch_losses == again.epoch_losses
    assert not torch.equal(weights(first), weights(other))


class Killed(BaseException):
    """Stands for the process dying right after a checkpoint was written."""


@pytest.mark.parametrize(
    "settings",
    [
        dict(arch="vgg_small", momentum=0.9, schedule="cosine", warmup_epochs=1),
        dict(loss="ntxent", head="l2", precision="fp16"),  # the gradient scaler's state resumes too
        dict(views="once", aug="pad_rotate_scale", negatives="hard"),
    ],
    ids=["vgg_small-momentum-cosine", "ntxent-fp16", "once-views-hard-negatives"],
)
def test_a_run_resumed_on_cuda_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch, capsys, settings):
    # The checkpoint's key includes every setting, epochs too: the run is killed after its first epoch's
    # checkpoint, as tests/pipeline/test_train.py does on the CPU, then run again with the same settings.
    uninterrupted = cuda_run(epochs=3, **settings)
    checkpoint = tmp_path / "train-checkpoint.pt"
    save = contrastlab.pipeline.train.save_checkpoint

    def save_then_die(path, state):
        save(path, state)
        raise Killed

    monkeypatch.setattr(contrastlab.pipeline.train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        cuda_run(epochs=3, checkpoint=checkpoint, **settings)
    monkeypatch.setattr(contrastlab.pipeline.train, "save_checkpoint", save)

    resumed = cuda_run(epochs=3, checkpoint=checkpoint, **settings)
    assert "resuming from" in capsys.readouterr().out
    assert torch.equal(weights(resumed), weights(uninterrupted))
    assert resumed.epoch_losses == uninterrupted.epoch_losses
    assert resumed.step_losses == uninterrupted.step_losses


# --- saved on the GPU, loaded on the CPU -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_an_encoder_trained_and_saved_on_cuda_loads_on_the_cpu_and_computes_the_same(tmp_path, arch):
    result = cuda_run(arch=arch, head="l2")
    encoder = result.encoder.eval()
    trained = {name: tensor.cpu() for name, tensor in encoder.state_dict().items()}
    x = normalize(to_unit(IMAGES[:32]))
    with torch_settings(CUDA), torch.no_grad():
        on_gpu = encoder(x.to(CUDA)).cpu()
    save_encoder(encoder, TrainConfig(**{**QUICK, "arch": arch, "head": "l2"}).encoder_design(1), tmp_path / "e.pt")
    loaded = load_encoder(tmp_path / "e.pt", CPU).eval()
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in trained.items())
    assert {tensor.device.type for tensor in loaded.state_dict().values()} == {"cpu"}
    with torch.no_grad():
        on_cpu = loaded(x)
    assert_close_to_scale(on_cpu, on_gpu, f"{arch} embedding")


# --- the device: chosen, checked and recorded --------------------------------------------------------------------


def test_cuda_and_auto_pick_the_first_gpu():
    assert pick_device("cuda", environ={}) == torch.device("cuda", 0)
    assert pick_device("auto", environ={}) == torch.device("cuda", 0)
    assert pick_device("auto", environ={DEVICE_ENV: "cuda"}) == torch.device("cuda", 0)
    assert pick_device("auto", environ={DEVICE_ENV: "cpu"}) == CPU  # how the suite keeps the GPU free by default


def test_a_gpu_the_machine_lacks_is_one_line_naming_how_many_it_has():
    count = torch.cuda.device_count()
    with pytest.raises(ParamError, match=rf"train\.device=cuda:99: this machine has {count} CUDA devices? \(cuda:0"):
        pick_device("cuda:99", environ={})
    with pytest.raises(ParamError, match=rf"{DEVICE_ENV}=cuda:99: this machine has {count} CUDA devices? \(cuda:0"):
        pick_device("auto", environ={DEVICE_ENV: "cuda:99"})


def stage_params() -> dict:
    """The committed params, as the other tests read them; where this copy of the checkout has no git history (a GPU
    machine may be sent the working tree alone), the working tree's."""
    try:
        return committed_params()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_the_train_stage_on_cuda_records_the_gpu_in_its_metrics(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    images, labels = IMAGES[:, 0].numpy(), LABELS.astype(np.uint8)  # the download stage's layout: (N, 28, 28)
    np.save(data / "train_images.npy", images)
    np.save(data / "train_labels.npy", labels)
    digests = {"images": content_digest(images), "labels": content_digest(labels)}
    (data / "meta.json").write_text(json.dumps({"digests": {"train": digests}}))
    save_npz(tmp_path / "examples.npz", **build(LABELS, "triplets", 8, seed=0))
    params = stage_params()
    params.update(dataset="mnist", loss="triplet", aug="simclr")  # what the examples above were built for
    params["model"].update(arch="study", embedding_dim=32)
    params["train"].update(epochs=1, batch_size=16, device="auto", deterministic=True, checkpoint=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        DEVICE_ENV: "cuda",  # what `auto` resolves to
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    outputs = ["--model", "encoder.pt", "--metrics", "train.json", "--loss-csv", "loss.csv", "--loss-png", "loss.png"]
    inputs = ["--data", "data", "--examples", "examples.npz", "--checkpoint", "checkpoint.pt"]
    command = [sys.executable, str(ROOT / "stages" / "train.py"), *inputs, *outputs]
    stage = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert stage.returncode == 0, stage.stderr
    assert " on cuda:0: " in stage.stdout
    record = read_metrics(tmp_path / "train.json")
    assert (record["device"], record["gpu"], record["cuda"]) == (
        "cuda:0",
        torch.cuda.get_device_name(0),
        torch.version.cuda,
    )
    assert record["deterministic"] is True and record["precision"] == "fp32"
    saved = load_encoder(tmp_path / "encoder.pt", CPU)
    assert all(torch.isfinite(tensor).all() for tensor in saved.state_dict().values() if tensor.is_floating_point())
