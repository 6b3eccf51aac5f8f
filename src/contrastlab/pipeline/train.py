"""Train the Siamese encoder: one file, read top to bottom.

Each step takes a batch of examples (pairs, triplets or two views of image indices), turns every
member into an input image (augmented on the fly where the example says so), embeds each member
with the shared encoder in its own forward pass (as the study did: BatchNorm then normalises
anchors, augmented positives and negatives each with their own batch statistics), optionally
swaps each negative for a semi-hard one from the batch, and applies the loss. With `small_crops`, each image's
small crops (multi-crop) are embedded in one more pass and every one is paired with both full views. An encoder
with a patch-whitening layer has it set from the training images before the first step (`fit_whitening`).
Augmented views are fresh every epoch (`views="fresh"`) or drawn once before training and reused (`views="once"`,
the study's way). The optimizer and learning-rate schedule default to the protocol's plain SGD
at a fixed rate; AdamW, momentum, weight decay, warm-up, cosine and one-cycle schedules are options.
A loss that turns NaN or infinite stops training at once with the step and the advice, and so do
weights or BatchNorm running statistics that are not finite after an epoch. An encoder that collapses
while its loss stays finite (a saturated sigmoid head) trains on: a collapse is a result, and the run's
`warnings` say so (`collapse_warnings`). The supervised baselines train in this
same loop, passing their own `Objective` (cross-entropy through a linear head) in place of the registered loss.
With a checkpoint path, the full training state is saved after every epoch and a killed run resumes from it,
ending with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._triton import has_triton

from contrastlab.infra.codegraph import closure
from contrastlab.infra.errors import TrainingDiverged
from contrastlab.infra.machine import PORTABLE_KERNELS, check_precision, cpp_compiler
from contrastlab.infra.params import AUTO, PRECISIONS
from contrastlab.infra.progress import EpochProgress
from contrastlab.methods.augmentations import AUGMENTATIONS, small_crops
from contrastlab.methods.encoders import (
    EMBEDDING_DIM,
    WHITENING_IMAGES,
    Encoder,
    make_encoder,
    save_torch,
    whitening_layers,
)
from contrastlab.methods.losses import LOSSES, LossOptions, multi_crop, semi_hard_negatives
from contrastlab.pipeline.preprocess import normalize, to_unit

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision -> the forward passes' autocast type


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the weights, built once from the validated params (`from_params`).
    The defaults are the protocol's recipe: plain SGD at a constant learning rate, the sigmoid head."""

    loss: str
    aug: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    views: str = "fresh"
    precision: str = "fp32"
    compile: bool = False
    deterministic: bool = True
    head: str = "sigmoid"
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    margin: float = 1.0
    temperature: float = 0.5
    invariance: float = 25.0
    variance: float = 25.0
    covariance: float = 1.0
    redundancy: float = 0.005
    small_crops: int = 0
    small_crop_size: int = 16
    arch: str = "study"
    embedding_dim: int = EMBEDDING_DIM

    @classmethod
    def from_params(cls, p: dict) -> TrainConfig:
        """From params with `loss`, `aug`, `seed` and any keys of the `train` and `model` sections (the rest
        keep the protocol's defaults); `auto` epochs and lr become the loss's published values."""
        given = {**p["train"], **p.get("model", {})}
        train = {f.name: given[f.name] for f in fields(cls) if f.name in given}
        loss = LOSSES[p["loss"]]
        train["epochs"] = loss.epochs if train["epochs"] == AUTO else train["epochs"]
        train["lr"] = loss.lr if train["lr"] == AUTO else train["lr"]
        return cls(loss=p["loss"], aug=p["aug"], seed=p["seed"], **train)

    @property
    def loss_options(self) -> LossOptions:
        return LossOptions(**{f.name: getattr(self, f.name) for f in fields(LossOptions)})

    def encoder_design(self, channels: int) -> dict:
        """The keyword arguments of `make_encoder` for this training (what `save_encoder` records)."""
        return {"channels": channels, "head": self.head, "arch": self.arch, "embedding_dim": self.embedding_dim}


@dataclass(frozen=True)
class Objective:
    """What training minimises in place of the config's registered loss: `loss(embeddings, target, labels, options)`
    (a registered loss's signature) of the members' embeddings passed through a trainable head, which `head` makes
    from the embedding width right after the encoder (so the seed initialises both); `what` names it in messages."""

    what: str
    loss: Callable[..., torch.Tensor]
    head: Callable[[int], nn.Module]


@dataclass
class TrainResult:
    encoder: Encoder
    epoch_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)  # of the last epoch
    train_time_s: float = 0.0
    images_seen: int = 0
    warnings: list[str] = field(default_factory=list)  # what makes the encoder suspect, with what to do
    compiled: bool = False  # the forward passes ran under torch.compile

    @property
    def images_per_s(self) -> float:
        return self.images_seen / self.train_time_s if self.train_time_s else 0.0


def draw_fixed_views(images, members, augmented, augment, generator, chunk=4096):
    """The study's views: one augmented uint8 image per augmented member, drawn once.

    Returns the views and a (N, k) table pointing each augmented member at its view (-1 elsewhere).
    """
    wanted = members[augmented]
    views = torch.empty((len(wanted), *images.shape[1:]), dtype=torch.uint8, device=images.device)
    for start in range(0, len(wanted), chunk):
        view = augment(images[wanted[start : start + chunk]], generator)
        views[start : start + chunk] = (view * 255).round().to(torch.uint8)
    slot = torch.full(members.shape, -1, dtype=torch.long, device=images.device)
    slot[augmented] = torch.arange(len(wanted), device=images.device)
    return views, slot


@dataclass(frozen=True)
class BatchPlan:
    """One step's examples on the device: `rows` (indices into the examples), and for its members, member after
    member (`size` of them), the positions of the plain images (`plain_at`) and their image indices (`plain`), and
    the positions of the augmented views (`views_at`) and their sources (`views`: image indices, or fixed views'
    slots). `has_views` is known on the host."""

    rows: torch.Tensor
    plain_at: torch.Tensor
    plain: torch.Tensor
    views_at: torch.Tensor
    views: torch.Tensor
    size: int
    has_views: bool

    def __len__(self) -> int:
        return len(self.rows)


def batch_plans(
    order: torch.Tensor,
    members: np.ndarray,
    augmented: np.ndarray,
    source: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> list[BatchPlan]:
    """The epoch's steps in `order` (a permutation of the examples), worked out on the host and sent to the device in
    one copy. `source` maps each member to what an augmented view is made from (the members' images, or fixed views'
    slots)."""
    parts: list[np.ndarray] = []
    shapes = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size].numpy()
        is_view = augmented[rows].T.reshape(-1).astype(bool)
        plain_at, views_at = np.flatnonzero(~is_view), np.flatnonzero(is_view)
        parts += [rows, plain_at, members[rows].T.reshape(-1)[plain_at], views_at, source[rows].T.reshape(-1)[views_at]]
        shapes.append((len(is_view), len(views_at) > 0))
    flat = torch.from_numpy(np.concatenate(parts).astype(np.int64)).to(device)
    pieces = flat.split([len(part) for part in parts])
    plans = []
    for step, (size, has_views) in enumerate(shapes):
        rows, plain_at, plain, views_at, views = pieces[5 * step : 5 * step + 5]
        plans.append(BatchPlan(rows, plain_at, plain, views_at, views, size, has_views))
    return plans


def why_not_compiled(device: torch.device) -> str | None:
    """Why torch.compile cannot compile for `device` here (None: it can): Inductor needs a C++ compiler for the CPU
    and Triton for a GPU, and without them fails only at the first forward pass."""
    if device.type == "cpu" and cpp_compiler() is None:
        return "no C++ compiler found for torch.compile's CPU backend (install g++, or name one in CXX)"
    if device.type == "cuda" and not has_triton():
        return "Triton, which torch.compile needs for a GPU, is not installed (pip install triton)"
    return None


def fit_whitening(encoder: torch.nn.Module, images: torch.Tensor, seed: int) -> None:
    """Set the encoder's patch-whitening layers (if it has any) from WHITENING_IMAGES of the uint8 training `images`,
    drawn with a generator of their own (the other random streams, and so every other encoder, stay as they were)."""
    whitening = whitening_layers(encoder)
    if whitening:
        rows = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:WHITENING_IMAGES]
        sample = normalize(to_unit(images[rows.to(images.device)]))
        for layer in whitening:
            layer.fit(sample)


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def make_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step learning rate: linear warm-up, then constant or cosine to 0; one-cycle has its own warm-up
    (30% of the steps) and ignores `warmup_epochs`."""
    total, warmup = steps_per_epoch * config.epochs, steps_per_epoch * config.warmup_epochs
    sched = torch.optim.lr_scheduler
    if config.schedule == "onecycle":
        # keep train.momentum
        return sched.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, cycle_momentum=False)
    after = sched.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup)) if config.schedule == "cosine" else None
    if not warmup:
        return after
    ramp = sched.LinearLR(optimizer, start_factor=1 / warmup, total_iters=max(1, warmup - 1))  # lr*(step+1)/warmup
    return ramp if after is None else sched.SequentialLR(optimizer, [ramp, after], milestones=[warmup])


def checkpoint_key(
    images: torch.Tensor, examples: dict[str, np.ndarray], config: TrainConfig, device: torch.device
) -> str:
    """Digest of everything that determines the weights (data, examples, config, the code training runs,
    torch version, device and CPU kernels), so a checkpoint resumes only the very same training."""
    kernels = {name: os.environ.get(name) for name in PORTABLE_KERNELS}  # `cpu_kernels` as use_cpu_kernels set it
    digest = hashlib.sha256(
        json.dumps(
            {
                **asdict(config),
                "device": device.type,
                "kernels": kernels,
                "capability": torch.backends.cpu.get_cpu_capability(),
            },
            sort_keys=True,
        ).encode()
    )
    digest.update(torch.__version__.encode())
    for path in closure(modules=[__name__]):
        digest.update(path.read_bytes())
    for array in (images.cpu().numpy(), *(np.asarray(examples[name]) for name in sorted(examples))):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def stop_if_diverged(what: str, value: float, epoch: int, step: int, config: TrainConfig) -> None:
    """A loss that is NaN or infinite stops training at once, saying where and what to change."""
    if not math.isfinite(value):
        raise TrainingDiverged(
            f"training diverged: {what} became {value} at epoch {epoch}, step {step} "
            f"(lr {config.lr}, {config.optimizer}); lower train.lr or change the recipe"
        )


def stop_if_weights_not_finite(encoder: torch.nn.Module, epoch: int, config: TrainConfig) -> None:
    """Weights or buffers (BatchNorm's running statistics) that are NaN or infinite stop training, naming the
    first such tensor: a running variance can overflow while every weight is still finite."""
    buffers = dict(encoder.named_buffers())
    for name, tensor in encoder.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            kind, value = "buffer" if name in buffers else "weight", tensor[~torch.isfinite(tensor)][0].item()
            raise TrainingDiverged(
                f"training diverged: the encoder's {kind} {name} became {value} in epoch {epoch} "
                f"(lr {config.lr}, {config.optimizer}); lower train.lr or change the recipe"
            )


# A collapsed encoder maps every image to (nearly) one point; with the sigmoid head saturated its loss stays
# finite and constant, so nothing above stops it. Both signs together make the warning: the weights' norm grew
# more than WEIGHT_GROWTH-fold from initialisation (on the tests' tiny data the study's recipes change it by
# at most 2%, and a triplet encoder collapsing at lr 1000 grows it 164-fold), and the batch loss stopped moving,
# staying within FLAT_LOSS of its mean (relative) over the second half of the last epoch's steps (the first
# half may still be before the collapse).
WEIGHT_GROWTH = 100
FLAT_LOSS = 1e-3


def weight_norm(encoder: torch.nn.Module) -> float:
    """The Euclidean norm of all the encoder's weights together, in float64 (huge weights do not overflow)."""
    return math.sqrt(sum(p.detach().to("cpu", torch.float64).square().sum().item() for p in encoder.parameters()))


def collapse_warnings(
    initial_norm: float, final_norm: float, step_losses: list[float], what: str, config: TrainConfig
) -> list[str]:
    """[the warning] when the weights' norm exploded while the loss stopped moving (see WEIGHT_GROWTH), else []."""
    tail = step_losses[len(step_losses) // 2 :]
    if len(tail) < 2 or not final_norm > WEIGHT_GROWTH * initial_norm:
        return []
    mean = sum(tail) / len(tail)
    if max(tail) - min(tail) > FLAT_LOSS * abs(mean):
        return []
    return [
        f"the encoder likely collapsed: its weights' norm grew {final_norm / initial_norm:.3g}-fold while "
        f"{what} stayed at {mean:.4f} over the last {len(tail)} steps (lr {config.lr}, "
        f"{config.optimizer}); lower train.lr or change the recipe"
    ]


def descend(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    config: TrainConfig,
) -> None:
    """One optimizer step on `loss`, through the fp16 gradient scaler (which passes everything through unless fp16
    enabled it). The loss is not read here: reading it would make the host wait for the device (`LossReader`)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if schedule is not None:
        schedule.step()


READ_LOSSES_EVERY_S = 0.5  # how often the step losses are read back (one host-device synchronisation each time)


class LossReader:
    """Collects each step's loss on the device and reads them back together, at most every READ_LOSSES_EVERY_S
    seconds and at the end of the epoch: a GPU then never waits for the host between steps. Each value read goes
    to the progress bar and the epoch's sum; a loss that is NaN or infinite stops training, naming its step
    (`stop_if_diverged`), at the read after it."""

    def __init__(self, bar: EpochProgress, what: str, epoch: int, config: TrainConfig):
        self.bar, self.what, self.epoch, self.config = bar, what, epoch, config
        self.pending: list[tuple[torch.Tensor, int, int]] = []  # (loss, examples, images) of each step not yet read
        self.values: list[float] = []
        self.total = 0.0  # sum over the steps read of loss x examples
        self.last_read = time.perf_counter()

    def add(self, loss: torch.Tensor, examples: int, images: int) -> None:
        self.pending.append((loss.detach(), examples, images))
        if time.perf_counter() - self.last_read >= READ_LOSSES_EVERY_S:
            self.read()

    def read(self) -> None:
        if self.pending:
            for (_, examples, images), value in zip(
                self.pending, torch.stack([loss for loss, _, _ in self.pending]).tolist(), strict=True
            ):
                stop_if_diverged(self.what, value, self.epoch, len(self.values) + 1, self.config)
                self.total += value * examples
                self.values.append(value)
                self.bar.step(value, images)
            self.pending = []
        self.last_read = time.perf_counter()


# cuBLAS picks its reduction order per call unless its workspace is fixed: this is PyTorch's documented setting for
# deterministic matrix products on CUDA, read when cuBLAS starts (so set before the first product)
CUBLAS_WORKSPACE = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


@contextmanager
def torch_settings(device: torch.device, deterministic: bool = True) -> Iterator[None]:
    """torch's settings while training runs on `device`, and torch's settings as they were after.

    On the CPU: deterministic algorithms, always (they cost nothing measurable). On CUDA, `deterministic` (the
    default) sets what PyTorch needs for the same bytes from the same seed on the same GPU and software:
    deterministic algorithms, cuDNN's deterministic convolutions without autotuning, cuBLAS's fixed workspace;
    `deterministic=False` lets cuDNN autotune (`cudnn.benchmark`) instead. TF32 stays off on CUDA either way: fp32
    means IEEE fp32 here, so CPU and GPU compute the same function (bf16 and fp16 are the fast choices).
    Deterministic mode also fills each new tensor with NaN, to expose reads of uninitialised memory; nothing here
    reads any, and the fill (with its page faults) costs ~10% of a step, so it is off meanwhile."""
    settings: Any = torch.utils.deterministic  # its setting is a property of the module's class: not in torch's stubs
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        settings.fill_uninitialized_memory,
        cudnn.deterministic,
        cudnn.benchmark,
        cudnn.fp32_precision,
        matmul.fp32_precision,
        {name: os.environ.get(name) for name in CUBLAS_WORKSPACE},
    )
    deterministic = deterministic or device.type == "cpu"
    torch.use_deterministic_algorithms(deterministic)
    settings.fill_uninitialized_memory = False
    if device.type == "cuda":
        cudnn.deterministic, cudnn.benchmark = deterministic, not deterministic
        cudnn.fp32_precision = matmul.fp32_precision = "ieee"  # no TF32
        if deterministic:
            os.environ.update({name: os.environ.get(name, value) for name, value in CUBLAS_WORKSPACE.items()})
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        settings.fill_uninitialized_memory = saved[2]
        cudnn.deterministic, cudnn.benchmark, cudnn.fp32_precision, matmul.fp32_precision = saved[3:7]
        for name, value in saved[7].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def save_checkpoint(path: Path, state: dict) -> None:
    save_torch(state, path)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The saved state if `path` holds a checkpoint of this very training, else None (and why)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in any way; it is only a shortcut
        print(f"ignoring unreadable checkpoint {path} ({type(err).__name__}); training from the start")
        return None
    if state.get("key") != key:
        print(f"ignoring checkpoint {path}: it belongs to other data or params; training from the start")
        return None
    return state


def train(
    images: torch.Tensor,
    examples: dict[str, np.ndarray],
    config: TrainConfig,
    *,
    device: torch.device,
    progress: bool = True,
    checkpoint: Path | None = None,
    objective: Objective | None = None,
) -> TrainResult:
    """Train a fresh encoder on uint8 `images` (N, C, H, W) with the examples from `contrastlab.pipeline.examples`.

    `config.precision="bf16"` runs the encoder's forward passes under bfloat16 autocast, "fp16" under float16 autocast
    with a gradient scaler (CUDA only); augmentation, loss, weights and optimizer stay fp32 (`check_precision`
    refuses what the device cannot run well). torch's settings while it runs: `torch_settings`.
    `config.compile`: the forward passes run under `torch.compile` (`why_not_compiled`: where it cannot, training
    runs uncompiled and says so); the result's encoder is the module itself, whose state_dict saves as always.
    `checkpoint`: where to save the state after each epoch and to resume from if it holds an earlier
    state of the same training. `objective`: what to minimise instead of `config.loss` (the supervised baselines).
    """
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision={config.precision!r}; expected one of {', '.join(PRECISIONS)}")
    check_precision(config.precision, device)
    with torch_settings(device, config.deterministic):
        torch.manual_seed(config.seed)
        shuffle_rng = torch.Generator().manual_seed(config.seed)
        augment_rng = torch.Generator(device).manual_seed(config.seed + 1)
        what, loss_fn = (
            (objective.what, objective.loss) if objective else (f"the {config.loss} loss", LOSSES[config.loss].fn)
        )
        options = config.loss_options
        augment = AUGMENTATIONS[config.aug]

        images = images.to(device)
        members = torch.from_numpy(examples["members"]).long().to(device)
        augmented = torch.from_numpy(examples["augmented"]).to(device)
        target = torch.from_numpy(examples["target"]).float().to(device)
        labels = torch.from_numpy(examples["labels"]).long().to(device)
        mine = str(examples.get("negatives", "label_aware")) == "hard"
        n_examples, k = members.shape

        # Module.to takes a device and a memory_format at once; torch's overloads do not say so
        encoder = make_encoder(**config.encoder_design(images.shape[1])).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        fit_whitening(encoder, images, config.seed)
        head = objective.head(config.embedding_dim).to(device) if objective else nn.Identity()
        initial_norm = weight_norm(encoder)
        optimizer = make_optimizer([*encoder.parameters(), *head.parameters()], config)
        scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")  # off: passes values through
        schedule = make_schedule(optimizer, config, -(-n_examples // config.batch_size))
        # Inductor fuses the BatchNorm and activation passes between the convolutions (whether that pays on a given
        # machine: BENCHMARKS.md). Each batch shape compiles once (`dynamic=False`: the full batches and the last,
        # smaller one), into a cache that later processes on the machine reuse.
        forward: nn.Module = encoder
        if config.compile and (missing := why_not_compiled(device)):
            print(f"train.compile: {missing}; training uncompiled")
        elif config.compile:
            forward = torch.compile(encoder, dynamic=False)  # type: ignore[assignment]  # an OptimizedModule: a Module
            if progress:
                print(
                    "train.compile: the first step of each batch size compiles the encoder (about 30 s; seconds when "
                    "torch's cache holds it from an earlier run)"
                )
        fixed_views = (
            draw_fixed_views(images, members, augmented, augment, augment_rng) if config.views == "once" else None
        )

        # Which member of a batch is a plain image and which an augmented view is known on the host before the epoch
        # (`batch_plan`): a step then indexes with integer positions, never with a mask whose count the host must wait
        # for.
        source = examples["members"] if fixed_views is None else fixed_views[1].cpu().numpy()

        def inputs_for(plan: BatchPlan) -> torch.Tensor:
            """All members of the plan's examples as one normalised batch, member after member."""
            x = torch.empty((plan.size, *images.shape[1:]), dtype=torch.float32, device=device)
            x[plan.plain_at] = to_unit(images[plan.plain])
            if plan.has_views:
                if fixed_views is None:
                    x[plan.views_at] = augment(images[plan.views], augment_rng)
                else:
                    x[plan.views_at] = to_unit(fixed_views[0][plan.views])
            return normalize(x).contiguous(memory_format=torch.channels_last)

        result = TrainResult(encoder, compiled=forward is not encoder)
        if checkpoint is not None:
            key = checkpoint_key(images, examples, config, device)
            saved = load_checkpoint(checkpoint, key)
            if saved is not None:
                encoder.load_state_dict(saved["encoder"])
                optimizer.load_state_dict(saved["optimizer"])
                if schedule is not None:
                    schedule.load_state_dict(saved["schedule"])
                scaler.load_state_dict(saved["scaler"])
                shuffle_rng.set_state(saved["shuffle_rng"])
                augment_rng.set_state(saved["augment_rng"])
                torch.set_rng_state(saved["torch_rng"])
                result.epoch_losses, result.step_losses, result.train_time_s, result.images_seen = (
                    saved["epoch_losses"],
                    saved.get("step_losses", []),
                    saved["train_time_s"],
                    saved["images_seen"],
                )
                print(f"resuming from {checkpoint} after epoch {len(result.epoch_losses)} of {config.epochs}")

        encoder.train()
        head.train()
        for epoch in range(len(result.epoch_losses) + 1, config.epochs + 1):
            order = torch.randperm(n_examples, generator=shuffle_rng)
            plans = batch_plans(order, examples["members"], examples["augmented"], source, config.batch_size, device)
            bar = EpochProgress(plans, f"epoch {epoch}/{config.epochs}", enabled=progress)
            losses, epoch_start, epoch_images = LossReader(bar, what, epoch, config), time.perf_counter(), 0
            for plan in bar:
                rows = plan.rows
                x = inputs_for(plan)  # augmentation stays fp32: autocast would also turn the blur into bf16
                with torch.autocast(
                    device.type, dtype=AUTOCAST.get(config.precision), enabled=config.precision != "fp32"
                ):
                    embeddings = [head(forward(member)).float() for member in x.chunk(k)]
                    if config.small_crops:  # multi-crop: all small crops of the batch in one pass of their own
                        crops = small_crops(
                            images[members[rows, 0]], augment_rng, config.small_crops, config.small_crop_size
                        )
                        small = head(forward(normalize(crops).contiguous(memory_format=torch.channels_last))).float()
                if mine:  # members are (anchor, positive, negative): the pool is every anchor and negative
                    pool, pool_labels = torch.cat([embeddings[0], embeddings[2]]), labels[rows][:, ::2].T.reshape(-1)
                    embeddings[2] = semi_hard_negatives(
                        embeddings[0], embeddings[1], pool, labels[rows, 0], pool_labels, config.margin
                    )
                if config.small_crops:
                    batch_loss = multi_crop(
                        loss_fn,
                        embeddings,
                        list(small.chunk(config.small_crops)),
                        target[rows],
                        labels[rows, 0],
                        options,
                    )
                else:
                    batch_loss = loss_fn(embeddings, target[rows], labels[rows, 0], options)
                descend(batch_loss, optimizer, scaler, schedule, config)
                step_images = len(plan) * (k + config.small_crops)  # a small crop counts as an image
                losses.add(batch_loss, len(plan), step_images)
                epoch_images += step_images
            losses.read()
            stop_if_weights_not_finite(encoder, epoch, config)
            result.train_time_s += time.perf_counter() - epoch_start
            result.images_seen += epoch_images
            result.epoch_losses.append(losses.total / n_examples)
            result.step_losses = losses.values
            bar.close(result.epoch_losses[-1])
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "key": key, "encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict() if schedule is not None else None, "scaler": scaler.state_dict(),
                    "shuffle_rng": shuffle_rng.get_state(), "augment_rng": augment_rng.get_state(),
                    "torch_rng": torch.get_rng_state(), "epoch_losses": result.epoch_losses,
                    "step_losses": result.step_losses, "train_time_s": result.train_time_s,
                    "images_seen": result.images_seen,
                })  # fmt: skip
        result.warnings = collapse_warnings(initial_norm, weight_norm(encoder), result.step_losses, what, config)
        return result
