"""Training throughput in ONE run: this CPU's matmul rate, the notebook way, and the project's path.

For each dataset x loss x augmentation it times a few training steps of the study's encoder
(same loss, batch size and data) along two paths:
- notebook: views made once with per-image PIL transforms, a DataLoader over a list of tensor
  tuples, one forward per member, default memory layout (benchmarks/notebook_style.py); its
  training runs in a process of its own, with the C allocator's defaults;
- project: `contrastlab.pipeline.train.train`, fresh batched augmentation every step, as `dvc repro` runs it;
and reports images/s, FLOP efficiency against the measured fp32 matmul rate and their ratio, for
the project's path also with bf16 autocast (`train.precision: bf16`).
`--full` also times the whole default scenario (mnist / triplet / simclr, 10 epochs) both ways,
and scores the project's encoders with the linear probe: fp32 with seeds 0-2 (the seed-to-seed
spread) and bf16 with seed 0; where torch.compile can run (a C++ compiler), also fp32 and bf16
compiled (`train.compile: true`), each twice: with an empty Inductor cache (compiling included,
as on a new machine) and with the cache the first run left (as every later stage run).

    python benchmarks/bench_training.py --full --into BENCHMARKS.md    # about an hour; rewrites only its section
    python benchmarks/bench_training.py --steps 2 --datasets mnist     # a quick look, printed only
    python benchmarks/bench_training.py --datasets --full --seeds 1    # only the whole scenario (~30 min)

`--into` replaces only this script's marked section of the file (benchmarks/sections.py).

Needs the arrays of the download stage (`dvc repro download`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import notebook_style  # noqa: E402
import sections  # noqa: E402

from contrastlab.infra.machine import cpp_compiler, cpu_description, has_native_bf16  # noqa: E402
from contrastlab.infra.params import PRECISIONS  # noqa: E402
from contrastlab.infra.stage import keep_freed_memory  # noqa: E402
from contrastlab.methods.encoders import make_encoder  # noqa: E402
from contrastlab.methods.losses import LOSSES  # noqa: E402
from contrastlab.pipeline.datasets import load_split  # noqa: E402
from contrastlab.pipeline.embed import embed_images  # noqa: E402
from contrastlab.pipeline.examples import build  # noqa: E402
from contrastlab.pipeline.probe import probe  # noqa: E402
from contrastlab.pipeline.train import TrainConfig, train  # noqa: E402

BATCH = 1024
OWNER = sections.owner_of(__file__)  # the name on its section's markers in BENCHMARKS.md
STUDY_LOSSES = ("pairwise", "triplet")  # the notebook way knows only the study's two losses
STUDY_AUGS = ("none", "pad_rotate_scale", "simclr")  # and its three augmentations


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    """Median rate of a square matrix product: the yardstick for FLOP efficiency."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def training_flop_per_image(channels: int, size: int, **design) -> float:
    """Forward multiply-adds of every convolution and linear layer, x2 for FLOP, x3 for forward plus backward."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(output.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        else:
            macs.append(output.numel() * module.in_features)

    encoder = make_encoder(channels, **design).eval()
    for layer in encoder.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            layer.register_forward_hook(count)
    with torch.no_grad():
        encoder(torch.zeros(1, channels, size, size))
    return 3 * 2 * sum(macs)


class NotebookProcess:
    """The notebook way in a process of its own, with the C allocator's defaults: this benchmark tunes the allocator
    of its own process as the stages do (`contrastlab.infra.stage.keep_freed_memory`), which would otherwise speed
    up the notebook way too."""

    def __init__(self) -> None:
        self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def build(self, images: np.ndarray, examples: dict, aug: str) -> float:
        return self.pool.submit(notebook_style.build_here, images, examples, aug).result()

    def train_steps(self, *args, **kwargs) -> tuple[int, float]:
        return self.pool.submit(notebook_style.train_here, *args, **kwargs).result()


@dataclass
class Measured:
    """One timing of the project's path: its time includes fresh augmentation, not set-up."""

    images_per_s: float
    seconds: float
    encoder: torch.nn.Module


def time_project(
    images: torch.Tensor,
    examples: dict,
    loss: str,
    aug: str,
    epochs: int = 1,
    precision: str = "fp32",
    seed: int = 0,
    compile: bool = False,
) -> Measured:
    """Train exactly as the `train` stage does (fresh views every step) and time it."""
    config = TrainConfig(
        loss=loss,
        aug=aug,
        seed=seed,
        epochs=epochs,
        lr=LOSSES[loss].lr,
        batch_size=BATCH,
        precision=precision,
        compile=compile,
    )
    result = train(images, examples, config, device=torch.device("cpu"), progress=False)
    return Measured(result.images_per_s, result.train_time_s, result.encoder)


def time_compiled_twice(images: torch.Tensor, examples: dict, precision: str) -> tuple[Measured, Measured]:
    """The default scenario compiled: first with an empty Inductor cache (as on a new machine), then, with
    this process's compiled code dropped, from the cache that run left (as every later stage run)."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            runs = []
            for _ in range(2):
                torch._dynamo.reset()
                runs.append(
                    time_project(images, examples, "triplet", "simclr", epochs=10, precision=precision, compile=True)
                )
        finally:
            if before is None:
                del os.environ["TORCHINDUCTOR_CACHE_DIR"]
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
    return runs[0], runs[1]


def probe_top1(encoder: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray, seed: int) -> float:
    """The probe stage's top-1 (eval-mode embeddings, stratified 80/20 split)."""
    embeddings = embed_images(encoder, test_images, batch_size=2048)["embedding"]
    return probe(embeddings, test_labels, test_size=0.2, knn_k=30, max_iter=1000, seed=seed)["top1"]


def subset(examples: dict, n: int, seed: int = 0) -> dict:
    """n examples drawn at random: the first n rows would all be anchors of class 0."""
    rows = np.random.default_rng(seed).permutation(len(examples["target"]))[:n]
    return {key: value[rows] if value.ndim else value for key, value in examples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/datasets"))
    parser.add_argument("--datasets", nargs="*", default=["mnist", "cifar10"], help="none: skip the throughput rows")
    parser.add_argument("--steps", type=int, default=4, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="timings per path and scenario (median shown)")
    parser.add_argument("--full", action="store_true", help="also time the whole default scenario both ways")
    parser.add_argument("--seeds", type=int, default=3, help="--full: fp32 seeds 0..N-1 (their spread)")
    sections.add_option(parser)
    args = parser.parse_args()
    keep_freed_memory()  # as every stage process keeps it (`contrastlab.infra.stage.run_stage`)
    if args.into:
        sections.check(args.into, OWNER)  # before an hour of timings, not after

    fp32 = matmul_gflops(torch.float32)
    bf16 = matmul_gflops(torch.bfloat16, size=2048 if has_native_bf16() else 512, repeats=3)
    precisions = PRECISIONS if has_native_bf16() else ("fp32",)
    lines = [
        f"Measured by `python {' '.join(sys.argv)}` on {cpu_description()}; torch {torch.__version__}; "
        f"fp32 matmul {fp32:.0f} GFLOP/s at the start (2048 x 2048, median of 7), bf16 matmul {bf16:.0f} GFLOP/s"
        + ("" if has_native_bf16() else " (512 x 512: no native bf16 on this CPU, so bf16 training is not timed)")
        + ".",
        "",
        f"Images/s are medians of {args.rounds} alternating timings of {args.steps} steps of {BATCH} (bf16 too).",
        "",
        "| dataset | loss | aug | notebook PIL views (s per 50k) | notebook img/s | project img/s | "
        "project FLOP eff. | notebook FLOP eff. | project / notebook | project bf16 img/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    n = args.steps * BATCH
    notebook = NotebookProcess()
    for name in args.datasets:
        images_np, labels = load_split(args.data / name, "train")
        images = torch.from_numpy(images_np)
        flop = training_flop_per_image(images.shape[1], images.shape[-1])
        for loss in STUDY_LOSSES:
            examples = subset(build(labels, LOSSES[loss].examples, 5000, seed=0), n)
            for aug in STUDY_AUGS:
                wanted = examples["members"][examples["augmented"]]
                start = time.perf_counter()
                notebook_style.make_views(images_np, wanted, aug)
                views_s = (time.perf_counter() - start) / len(wanted) * 50_000
                notebook.build(images_np, examples, aug)
                # Warm-up of every path: first calls pay one-off kernel set-up.
                warm_up = subset(examples, BATCH)
                for precision in precisions:
                    time_project(images, warm_up, loss, aug, precision=precision)
                notebook.train_steps(loss, images.shape[1], LOSSES[loss].lr, BATCH, max_steps=1)
                # Alternate the two paths so that a change in the machine's load hits both alike.
                rates = {path: [] for path in (*precisions, "notebook")}
                for _ in range(args.rounds):
                    for precision in precisions:
                        rates[precision].append(
                            time_project(images, examples, loss, aug, precision=precision).images_per_s
                        )
                    seen, seconds = notebook.train_steps(loss, images.shape[1], LOSSES[loss].lr, BATCH)
                    rates["notebook"].append(seen / seconds)
                ours, theirs = statistics.median(rates["fp32"]), statistics.median(rates["notebook"])
                bf16_rate = f"{statistics.median(rates['bf16']):,.0f}" if "bf16" in rates else "n/a"
                row = (
                    f"| {name} | {loss} | {aug} | {views_s:.0f} | {theirs:,.0f} | {ours:,.0f} | "
                    f"{ours * flop / 1e9 / fp32:.0%} | {theirs * flop / 1e9 / fp32:.0%} | "
                    f"{ours / theirs:.2f}x | {bf16_rate} |"
                )
                lines.append(row)
                print(row, flush=True)

    if args.full:
        images_np, labels = load_split(args.data / "mnist", "train")
        examples = build(labels, "triplets", 5000, seed=0)
        views_s = notebook.build(images_np, examples, "simclr")
        train_s = notebook.train_steps("triplet", 1, 0.15, BATCH, epochs=10)[1]
        notebook_s = views_s + train_s
        test_images, test_labels = load_split(args.data / "mnist", "test")
        full = [
            "",
            "Whole default scenario (mnist / triplet / simclr, 50k triplets, 10 epochs; the project's path makes "
            "fresh views every epoch, the notebook way's once):",
            "",
            "| path | seconds | vs the notebook way | probe top-1 |",
            "|---|---|---|---|",
            f"| notebook way ({views_s:.0f} s making views + {train_s:.0f} s training) | {notebook_s:.0f} | 1.00x | |",
        ]
        print("\n".join(full), flush=True)
        for precision, seeds in (("fp32", range(args.seeds)), ("bf16", (0,))):
            for seed in seeds if precision in precisions else ():
                ours = time_project(
                    torch.from_numpy(images_np),
                    examples,
                    "triplet",
                    "simclr",
                    epochs=10,
                    precision=precision,
                    seed=seed,
                )
                top1 = probe_top1(ours.encoder, test_images, test_labels, seed=0)
                full.append(
                    f"| project {precision}, seed {seed} | {ours.seconds:.0f} | {notebook_s / ours.seconds:.2f}x | "
                    f"{top1:.4f} |"
                )
                print(full[-1], flush=True)
        for precision in precisions if cpp_compiler() else ():
            cold, warm = time_compiled_twice(torch.from_numpy(images_np), examples, precision)
            top1 = probe_top1(warm.encoder, test_images, test_labels, seed=0)
            full.append(
                f"| project {precision} compiled, seed 0, empty Inductor cache (compiling included) / cache kept | "
                f"{cold.seconds:.0f} / {warm.seconds:.0f} | {notebook_s / cold.seconds:.2f}x / "
                f"{notebook_s / warm.seconds:.2f}x | {top1:.4f} |"
            )
            print(full[-1], flush=True)
        lines += full

    drift = f"\nfp32 matmul again at the end of the run: {matmul_gflops(torch.float32):.0f} GFLOP/s (load drift)."
    print(drift)
    lines.append(drift)
    if args.into:
        sections.write(args.into, OWNER, "\n".join(lines))


if __name__ == "__main__":
    main()
