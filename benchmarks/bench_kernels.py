"""What `cpu_kernels: portable` costs, and whether it changes the bytes: the real train stage, run on the
default scenario (or `-S key=value` changes of it) with `cpu_kernels: native` and `portable` alternately in
a scratch folder, reporting per run the training loop's time (metrics/train.json) and the encoder's md5.

    python benchmarks/bench_kernels.py                                        # the default scenario, once each (~8 min)
    python benchmarks/bench_kernels.py -S dataset=cifar10 -S train.epochs=2 --repeats 2

Compare the md5s of two machines, or of other CPUs on this one: `--cpu MODEL` runs the train stage under QEMU's
user-mode emulation of that CPU (Debian: apt-get install qemu-user; 10.0 or newer, whose AVX2 runs torch's
kernels), so the libraries pick the kernels they would pick there. It is some 1,000x slower, so train little:

    python benchmarks/bench_kernels.py --cpu EPYC-Rome -S pairs.anchors_per_class=10 \\
        -S train.batch_size=16 -S train.epochs=2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from contrastlab.infra.machine import cpu_description
from contrastlab.infra.params import CPU_KERNELS
from contrastlab.study.runner import fixed_value, with_values

ROOT = Path(__file__).resolve().parents[1]


def stage(name: str, *args: str, cwd: Path, emulated: str | None = None) -> None:
    """One stage script of this checkout, run as `dvc repro` runs it, in `cwd` (its params.yaml); on the CPU
    model `emulated` under QEMU when given."""
    emulator = ["qemu-x86_64", "-cpu", emulated] if emulated else []
    subprocess.run(
        [*emulator, sys.executable, str(ROOT / "stages" / f"{name}.py"), *args],
        cwd=cwd,
        check=True,
        env={**os.environ, "DVC_ROOT": str(ROOT)},
        capture_output=True,
    )


def train_once(folder: Path, params: dict, kernels: str, emulated: str | None = None) -> dict:
    """Train with `kernels`; the training loop's seconds and the encoder's md5."""
    (folder / "params.yaml").write_text(yaml.safe_dump({**params, "cpu_kernels": kernels}, sort_keys=False))
    dataset = folder / "data" / params["dataset"]
    stage(
        "train",
        "--data",
        str(dataset),
        "--examples",
        "examples.npz",
        "--model",
        "encoder.pt",
        "--metrics",
        "train.json",
        "--loss-csv",
        "loss.csv",
        "--loss-png",
        "loss.png",
        "--checkpoint",
        "checkpoint.pt",
        cwd=folder,
        emulated=emulated,
    )
    metrics = json.loads((folder / "train.json").read_text())
    return {
        "kernels": kernels,
        "train_time_s": metrics["train_time_s"],
        "final_loss": metrics["final_loss"],
        "md5": hashlib.md5((folder / "encoder.pt").read_bytes()).hexdigest(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        type=fixed_value,
        metavar="KEY=VALUE",
        help="a change of the committed defaults, as `dvc exp run -S` takes it",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting, alternating")
    parser.add_argument("--kernels", nargs="+", choices=CPU_KERNELS, default=list(CPU_KERNELS))
    parser.add_argument(
        "--cpu", metavar="MODEL", help="train on QEMU's emulation of this CPU (`qemu-x86_64 -cpu help`)"
    )
    args = parser.parse_args()

    params = with_values(yaml.safe_load((ROOT / "params.yaml").read_text()), dict(args.set))
    params["train"]["checkpoint"] = False
    machine = f"QEMU's {args.cpu} on {cpu_description()}" if args.cpu else cpu_description()
    print(f"{machine}; {' '.join(f'{k}={v}' for k, v in args.set) or 'the default scenario'}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dataset = folder / "data" / params["dataset"]
        stage("download", "--out", str(dataset), cwd=folder)
        stage(
            "examples",
            "--labels",
            str(dataset / "train_labels.npy"),
            "--out",
            "examples.npz",
            "--metrics",
            "examples.json",
            cwd=folder,
        )
        runs = []
        for _ in range(args.repeats):
            for kernels in args.kernels:
                runs.append(train_once(folder, params, kernels, args.cpu))
                print(json.dumps(runs[-1]), flush=True)
    median = {k: statistics.median(r["train_time_s"] for r in runs if r["kernels"] == k) for k in args.kernels}
    print("median training time: " + ", ".join(f"{k} {seconds:.1f} s" for k, seconds in median.items()))
    if len(median) == 2:
        print(f"portable / native = {median['portable'] / median['native']:.2f}")


if __name__ == "__main__":
    main()
