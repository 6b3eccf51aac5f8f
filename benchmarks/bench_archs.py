"""What each encoder of `model.arch` costs to train on this CPU, in ONE run (timings alternate between archs).

For each dataset and loss (SimCLR views; triplet: three members per example, ntxent: two) it times a few
training steps of every arch exactly as the `train` stage runs them (channels-last, batched augmentation on
the fly) and reports parameters, training FLOP per image, images/s, FLOP efficiency against the measured
fp32 matmul rate, the ratio to the study's encoder and the minutes one epoch of the protocol's 50,000
examples takes at that rate; where the CPU has native bf16, also its images/s under `train.precision: bf16`;
where torch.compile can run (a C++ compiler), also compiled (`train.compile: true`; compiling is paid in the
warm-up, which every later timing reuses).

    python benchmarks/bench_archs.py --into BENCHMARKS.md                     # rewrites only its section
    python benchmarks/bench_archs.py --steps 2 --rounds 1 --datasets mnist    # a quick look

Needs the arrays of the download stage (`dvc repro download`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402
from bench_training import BATCH, matmul_gflops, subset, training_flop_per_image  # noqa: E402

from contrastlab.infra.machine import cpp_compiler, cpu_description, has_native_bf16  # noqa: E402
from contrastlab.infra.params import PRECISIONS  # noqa: E402
from contrastlab.infra.stage import keep_freed_memory  # noqa: E402
from contrastlab.methods.encoders import ARCHS, EMBEDDING_DIM, make_encoder  # noqa: E402
from contrastlab.methods.losses import LOSSES  # noqa: E402
from contrastlab.pipeline.datasets import load_split  # noqa: E402
from contrastlab.pipeline.examples import build  # noqa: E402
from contrastlab.pipeline.train import TrainConfig, train  # noqa: E402

LOSSES_TIMED = ("triplet", "ntxent")
EXAMPLES_PER_EPOCH = 50_000  # the protocol's 5,000 anchors per class
OWNER = sections.owner_of(__file__)  # the name on its section's markers in BENCHMARKS.md


def images_per_s(
    images: torch.Tensor, examples: dict, loss: str, arch: str, precision: str = "fp32", compiled: bool = False
) -> float:
    config = TrainConfig(
        loss=loss,
        aug="simclr",
        seed=0,
        epochs=1,
        lr=LOSSES[loss].lr,
        batch_size=BATCH,
        arch=arch,
        precision=precision,
        compile=compiled,
    )
    return train(images, examples, config, device=torch.device("cpu"), progress=False).images_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/datasets"))
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    parser.add_argument("--steps", type=int, default=3, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="timings per arch (median shown)")
    sections.add_option(parser)
    args = parser.parse_args()
    keep_freed_memory()  # as every stage process keeps it (`contrastlab.infra.stage.run_stage`)
    if args.into:
        sections.check(args.into, OWNER)

    fp32 = matmul_gflops(torch.float32)
    precisions = PRECISIONS if has_native_bf16() else ("fp32",)
    compiles = (False, True) if cpp_compiler() else (False,)
    runs = [(arch, precision, compiled) for arch in ARCHS for precision in precisions for compiled in compiles]
    lines = [
        f"Measured by `python {' '.join(sys.argv)}` on {cpu_description()}, torch {torch.__version__}; "
        f"fp32 matmul {fp32:.0f} GFLOP/s. Images/s: medians of "
        f"{args.rounds} timings of {args.steps} steps of {BATCH} examples with SimCLR views, the archs alternating.",
        "",
        "| dataset | loss | arch | parameters | training MFLOP / image | img/s | FLOP eff. | time / study's | "
        "min per epoch (50k examples) | bf16 img/s | bf16 / fp32 | compiled fp32 img/s | compiled bf16 img/s | "
        "fastest / fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.datasets:
        images_np, labels = load_split(args.data / name, "train")
        images = torch.from_numpy(images_np)
        for loss in LOSSES_TIMED:
            layout = LOSSES[loss].examples
            examples = subset(build(labels, layout, 5000, seed=0), args.steps * BATCH)
            members = examples["members"].shape[1]
            for run in runs:  # warm-up: first calls pay one-off kernel set-up
                images_per_s(images, subset(examples, BATCH), loss, *run)
            rates: dict[tuple[str, str, bool], list[float]] = {run: [] for run in runs}
            for _ in range(args.rounds):
                for run in runs:
                    rates[run].append(images_per_s(images, examples, loss, *run))
            medians = {run: statistics.median(timings) for run, timings in rates.items()}
            study_rate = medians["study", "fp32", False]
            for arch in ARCHS:
                rate = medians[arch, "fp32", False]
                bf16, fastest = medians.get((arch, "bf16", False)), max(v for k, v in medians.items() if k[0] == arch)
                compiled = [medians.get((arch, precision, True)) for precision in PRECISIONS]
                flop = training_flop_per_image(images.shape[1], images.shape[-1], arch=arch)
                size = sum(
                    p.numel()
                    for p in make_encoder(
                        images.shape[1], arch=arch, embedding_dim=ARCHS[arch].embedding_dim or EMBEDDING_DIM
                    ).parameters()
                )
                row = (
                    f"| {name} | {loss} | {arch} | {size:,} | {flop / 1e6:.1f} | {rate:,.0f} | "
                    f"{rate * flop / 1e9 / fp32:.0%} | {study_rate / rate:.1f}x | "
                    f"{EXAMPLES_PER_EPOCH * members / rate / 60:.1f} | "
                    + (f"{bf16:,.0f} | {bf16 / rate:.2f}x | " if bf16 is not None else "n/a | n/a | ")
                    + "".join(f"{value:,.0f} | " if value is not None else "n/a | " for value in compiled)
                    + f"{fastest / rate:.2f}x |"
                )
                lines.append(row)
                print(row, flush=True)
    if args.into:
        sections.write(args.into, OWNER, "\n".join(lines))


if __name__ == "__main__":
    main()
