"""Does a training step keep its speed over a process's life? The study encoder's step, fp32 and bf16, in fresh
processes.

Each process trains the study encoder (SGD, a mean-squared loss, random images of `--dataset`'s shape, 3 x 1024
per step as a triplet batch) for `--steps` steps and prints its mean milliseconds per block of 10 steps; the
precisions alternate, `--processes` times each. Written for issue 19 after bf16 read 0.99-1.46x fp32 on one and
the same training step from one timing to the next: a single timing cannot tell a slower precision from a
slower moment of the machine, blocks of steps over several processes can.

    python benchmarks/bench_step_drift.py --dataset cifar10     # about 3 minutes on 2 cores
    python benchmarks/bench_step_drift.py --flush-denormal      # the same with denormals flushed to zero
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convolutions import BATCH, SHAPES, in_fresh_process  # noqa: E402

from contrastlab.infra.machine import has_native_bf16  # noqa: E402
from contrastlab.infra.stage import keep_freed_memory  # noqa: E402
from contrastlab.methods.encoders import make_encoder  # noqa: E402

BLOCK = 10  # steps per reported mean


def block_means(dataset: str, bf16: bool, steps: int, flush_denormal: bool = False) -> list[float]:
    """Milliseconds per step, averaged over each block of BLOCK steps, of training in this process;
    `flush_denormal`: denormal numbers taken as zero (tells a slowdown by denormals from others)."""
    keep_freed_memory()
    torch.set_flush_denormal(flush_denormal)
    torch.manual_seed(0)
    channels, side = SHAPES[dataset]
    encoder = make_encoder(channels).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.01)
    images = torch.randn(3 * BATCH, channels, side, side).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.cat([encoder(member) for member in images.chunk(3)])
        optimizer.zero_grad()
        out.float().pow(2).mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return [1000 * sum(times[i : i + BLOCK]) / len(times[i : i + BLOCK]) for i in range(0, steps, BLOCK)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=SHAPES, default="cifar10")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per precision")
    parser.add_argument("--flush-denormal", action="store_true", help="denormal numbers as zero")
    args = parser.parse_args()
    precisions = (False, True) if has_native_bf16() else (False,)
    print(f"ms per step of 3 x {BATCH} {args.dataset} images, mean of each block of {BLOCK} steps:\n")
    print(
        "| process | precision | "
        + " | ".join(f"steps {i + 1}-{i + BLOCK}" for i in range(0, args.steps, BLOCK))
        + " |"
    )
    print("|---|---|" + "---|" * len(range(0, args.steps, BLOCK)))
    for process in range(1, args.processes + 1):
        for bf16 in precisions:
            means = in_fresh_process(
                "bench_step_drift", "block_means", args.dataset, bf16, args.steps, args.flush_denormal
            )
            print(
                f"| {process} | {'bf16' if bf16 else 'fp32'} | " + " | ".join(f"{m:.0f}" for m in means) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
