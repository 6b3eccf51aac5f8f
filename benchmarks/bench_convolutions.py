"""The study encoder's training step by convolution path and compilation, in ONE run (ratios hold on any machine).

Per strided 2x2 convolution (batch 1024 images of `--dataset`, channels-last), forward and backward milliseconds:
fp32 conv2d, bf16 conv2d (oneDNN's backward) and bf16 with the backward as matrix products
(`StridedConv2x2`, what training uses under `train.precision: bf16`). Then one whole encoder step of a
triplet batch (3 x 1024 images) as training runs it, a forward per member, eager and under `torch.compile`,
with what compiling costs in a fresh process: first with an empty Inductor cache, then again with the
cache the first one left. Beside it, eager, the three members in one forward of 3,072 images: BatchNorm
would then mix the members' statistics, so it only bounds what one forward with per-member statistics
could gain. Every step runs in a fresh process that keeps freed memory as the train stage does, so that
none inherits the memory the layer timings warmed.

    python benchmarks/bench_convolutions.py              # about 3 minutes on 2 cores
    python benchmarks/bench_convolutions.py --dataset cifar10 --no-compile  # CIFAR-10's shapes
    python benchmarks/bench_convolutions.py --no-compile # the convolutions only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from contrastlab.infra.machine import cpu_description, has_native_bf16
from contrastlab.infra.stage import keep_freed_memory
from contrastlab.methods.encoders import StridedConv2x2, make_encoder

BATCH = 1024
SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}  # (channels, side) of each dataset's images
PATHS = {"fp32 conv2d": (False, False), "bf16 conv2d": (True, False), "bf16 matmul backward": (True, True)}


def strided_inputs(channels: int, size: int) -> list[tuple[int, int, int]]:
    """(input channels, output channels, input size) of each strided convolution of the study encoder."""
    found = []
    encoder = make_encoder(channels)
    for layer in encoder.modules():
        if isinstance(layer, StridedConv2x2):
            layer.register_forward_hook(
                lambda layer, inputs, _: found.append((layer.in_channels, layer.out_channels, inputs[0].shape[-1]))
            )
    encoder(torch.zeros(2, channels, size, size))
    return found


def median_ms(run, repeats: int) -> float:
    """Median milliseconds of `run()` after one untimed call (oneDNN builds its kernels on the first)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def time_layer(
    inputs: int, outputs: int, size: int, bf16: bool, matmul_backward: bool, repeats: int, input_grad: bool
) -> tuple[float, float]:
    """Forward and backward milliseconds of one strided convolution over a batch; `input_grad`: also the
    gradient of its input (every layer but the first, whose input is the images)."""
    layer = StridedConv2x2(inputs, outputs).to(memory_format=torch.channels_last)
    layer.matmul_backward = matmul_backward
    x = torch.randn(BATCH, inputs, size, size).contiguous(memory_format=torch.channels_last).requires_grad_(input_grad)

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return layer(x)

    grad = torch.randn_like(forward())
    forward_ms = median_ms(forward, repeats)
    backward = []
    for _ in range(repeats + 1):  # the first untimed, as in median_ms
        out = forward()
        start = time.perf_counter()
        out.backward(grad)
        backward.append(time.perf_counter() - start)
    return forward_ms, statistics.median(backward[1:]) * 1000


def time_step(bf16: bool, compiled: bool, repeats: int, per_member: bool = True, dataset: str = "mnist") -> dict:
    """One training step of the study encoder on 3 x BATCH images of `dataset`'s size, a forward per member of
    BATCH (as training runs) or one for all: seconds of the first call (compilation, when compiled) and the
    median milliseconds of the later ones. Memory is kept as every stage process keeps it (`keep_freed_memory`)."""
    keep_freed_memory()
    torch.manual_seed(0)
    channels, side = SHAPES[dataset]
    encoder = make_encoder(channels).to(memory_format=torch.channels_last)
    model = torch.compile(encoder, dynamic=False) if compiled else encoder
    x = torch.randn(3 * BATCH, channels, side, side).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.cat([model(member) for member in x.chunk(3 if per_member else 1)])
        out.float().pow(2).sum().backward()

    start = time.perf_counter()
    step()
    return {"first_s": time.perf_counter() - start, "step_ms": median_ms(step, repeats)}


def step_in_fresh_process(
    bf16: bool, compiled: bool, repeats: int, cache_dir: str, per_member: bool = True, dataset: str = "mnist"
) -> dict:
    """`time_step` in a new Python process with its own Inductor cache folder, as a stage run would be (every
    step cell runs so, eager ones too: the layer timings before them leave this process's memory warm)."""
    return in_fresh_process(
        "bench_convolutions",
        "time_step",
        bf16,
        compiled,
        repeats,
        per_member,
        dataset,
        env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir),
    )


def in_fresh_process(module: str, function: str, *args, env: dict | None = None):
    """`module.function(*args)` of this folder's benchmarks in a new Python process; its result, through JSON."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import {module} as m; "
        f"print(json.dumps(m.{function}(*{args!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timings per measurement (median shown)")
    parser.add_argument("--dataset", choices=SHAPES, default="mnist", help="whose image shapes to time")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    args = parser.parse_args()
    if not has_native_bf16():
        sys.exit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to compare")

    print(f"CPU: {cpu_description()}; torch {torch.__version__}; {torch.get_num_threads()} threads\n")
    print(
        f"Strided 2x2 convolutions, batch {BATCH} ({args.dataset}), forward / backward ms, medians of {args.repeats}:\n"
    )
    print("| convolution | " + " | ".join(PATHS) + " | bf16 backward: conv2d / matmul |")
    print("|---|" + "---|" * (len(PATHS) + 1))
    totals = {name: [0.0, 0.0] for name in PATHS}
    for index, (inputs, outputs, size) in enumerate(strided_inputs(*SHAPES[args.dataset])):
        cells = {
            name: time_layer(inputs, outputs, size, *flags, args.repeats, input_grad=index > 0)
            for name, flags in PATHS.items()
        }
        for name, (forward_ms, backward_ms) in cells.items():
            totals[name][0] += forward_ms
            totals[name][1] += backward_ms
        ratio = cells["bf16 conv2d"][1] / cells["bf16 matmul backward"][1]
        print(
            f"| {inputs} -> {outputs} ({size}x{size} input) | "
            + " | ".join(f"{f:.1f} / {b:.1f}" for f, b in cells.values())
            + f" | {ratio:.2f}x |",
            flush=True,
        )
    print(
        "| all four | "
        + " | ".join(f"{f:.1f} / {b:.1f}" for f, b in totals.values())
        + f" | {totals['bf16 conv2d'][1] / totals['bf16 matmul backward'][1]:.2f}x |"
    )

    print(f"\nWhole encoder step (3 x {BATCH} {args.dataset} images, forward and backward), ms:\n")
    print(
        "| precision | eager, one forward of 3,072 | eager | compiled | compile, empty cache (s) | "
        "compile, cache kept (s) |"
    )
    print("|---|---|---|---|---|---|")
    for bf16 in (False, True):
        with tempfile.TemporaryDirectory() as cache:
            together = step_in_fresh_process(bf16, False, args.repeats, cache, False, args.dataset)
            eager = step_in_fresh_process(bf16, False, args.repeats, cache, True, args.dataset)
        cells = [f"{together['step_ms']:.0f}", f"{eager['step_ms']:.0f}"]
        if args.compile:
            with tempfile.TemporaryDirectory() as cache:
                cold = step_in_fresh_process(bf16, True, args.repeats, cache, True, args.dataset)
                warm = step_in_fresh_process(bf16, True, args.repeats, cache, True, args.dataset)
            cells += [
                f"{statistics.median([cold['step_ms'], warm['step_ms']]):.0f}",
                f"{cold['first_s']:.1f}",
                f"{warm['first_s']:.1f}",
            ]
        else:
            cells += ["-", "-", "-"]
        print(f"| {'bf16 (matmul backward)' if bf16 else 'fp32'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
