"""What multi-crop's small crops (`train.small_crops`) cost per training step, per encoder, in ONE run.

For each dataset and encoder it times a few VICReg training steps of the `label_free` recipe's batch (256 examples,
two SimCLR views each) with 0, 2, 4 and 6 small crops per image (`train.small_crop_size`, 16 pixels), the settings
alternating within each round, and reports each encoder's training FLOP per full-size image and milliseconds per
step with the ratio to no small crops: what a step with N crops costs against one without.

    python benchmarks/bench_multicrop.py --into BENCHMARKS.md        # rewrites only its section
    python benchmarks/bench_multicrop.py --datasets cifar10 --rounds 1

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
from bench_training import subset, training_flop_per_image  # noqa: E402

from contrastlab.infra.machine import cpu_description  # noqa: E402
from contrastlab.infra.stage import keep_freed_memory  # noqa: E402
from contrastlab.pipeline.datasets import load_split  # noqa: E402
from contrastlab.pipeline.examples import build  # noqa: E402
from contrastlab.pipeline.train import TrainConfig, train  # noqa: E402

ARCHS_TIMED = ("vgg_small", "airbench_small", "airbench")
CROPS = (0, 2, 4, 6)
BATCH = 256  # the label_free recipe's
OWNER = sections.owner_of(__file__)


def seconds_per_step(images: torch.Tensor, examples: dict, arch: str, crops: int) -> float:
    config = TrainConfig(
        loss="vicreg",
        aug="simclr",
        seed=0,
        epochs=1,
        lr=0.003,
        batch_size=BATCH,
        head="linear",
        optimizer="adamw",
        arch=arch,
        embedding_dim=1024,
        small_crops=crops,
    )
    result = train(images, examples, config, device=torch.device("cpu"), progress=False)
    return result.train_time_s / -(-len(examples["target"]) // BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/datasets"))
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"])
    parser.add_argument("--steps", type=int, default=4, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="timings per setting (median shown)")
    sections.add_option(parser)
    args = parser.parse_args()
    keep_freed_memory()  # as every stage process keeps it (`contrastlab.infra.stage.run_stage`)
    if args.into:
        sections.check(args.into, OWNER)
    lines = [
        f"Measured by `python {' '.join(sys.argv)}` on {cpu_description()}, torch {torch.__version__}: medians of "
        f"{args.rounds} timings of {args.steps} VICReg steps of {BATCH} examples (two SimCLR views each, fp32), the "
        "settings alternating.",
        "",
        "| dataset | arch | training MFLOP / image | ms / step | "
        + " | ".join(f"{n} crops: ms / step (x no crops)" for n in CROPS[1:])
        + " |",
        "|---|---|---|---|" + "---|" * (len(CROPS) - 1),
    ]
    print("\n".join(lines), flush=True)
    for name in args.datasets:
        images_np, labels = load_split(args.data / name, "train")
        images = torch.from_numpy(images_np)
        examples = subset(build(labels, "views", 5000, seed=0), args.steps * BATCH)
        runs = [(arch, crops) for arch in ARCHS_TIMED for crops in CROPS]
        for run in runs:  # warm-up: first calls pay one-off kernel set-up
            seconds_per_step(images, subset(examples, BATCH), *run)
        timings: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
        for _ in range(args.rounds):
            for run in runs:
                timings[run].append(seconds_per_step(images, examples, *run))
        medians = {run: statistics.median(values) for run, values in timings.items()}
        for arch in ARCHS_TIMED:
            base = medians[arch, 0]
            flop = training_flop_per_image(images.shape[1], images.shape[-1], arch=arch)
            row = (
                f"| {name} | {arch} | {flop / 1e6:.1f} | {base * 1000:,.0f} | "
                + " | ".join(f"{medians[arch, n] * 1000:,.0f} ({medians[arch, n] / base:.2f}x)" for n in CROPS[1:])
                + " |"
            )
            lines.append(row)
            print(row, flush=True)
    if args.into:
        sections.write(args.into, OWNER, "\n".join(lines))


if __name__ == "__main__":
    main()
