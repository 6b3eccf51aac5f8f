"""Embedded Dask study: more workers with fewer threads, or fewer with more? Times the 12 study scenarios of
one seed (and their 8 baselines) with each layout of this machine's cores, in fresh clones of this repository
(each its own DVC cache and MLflow store, so nothing is restored from an earlier run), with quick settings:
500 anchors per class (the supervised baselines train on as many images), 3 epochs, a 500-point t-SNE.

    python benchmarks/bench_workers.py                      # 2 x 1 and 1 x 2 on a 2-core machine; ~30 min
    python benchmarks/bench_workers.py --layouts 4x1 2x2    # workers x threads
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"pairs": {"anchors_per_class": 500}, "train": {"epochs": 3}, "tsne": {"n_points": 500, "max_iter": 1000}}


def quick_clone(folder: Path) -> Path:
    """A clone of this repository's commit with the quick settings committed, the mirror where it expects and no
    committed results (every run is computed)."""
    clone = folder / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for section, values in QUICK.items():
        params[section].update(values)
    params["download"]["mirror"] = str((ROOT / params["download"]["mirror"]).resolve())
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ("rm", "-rq", "study/results"),
        ("add", "params.yaml"),
        ("-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "-qm", "quick settings"),
    ):
        subprocess.run(["git", *args], cwd=clone, check=True)
    for key, value in (("user.name", "bench"), ("user.email", "bench@example.com")):
        subprocess.run(["git", "config", key, value], cwd=clone, check=True)
    return clone


def timed_study(workers: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        clone = quick_clone(Path(tmp))
        env = {
            **os.environ,
            "PYTHONPATH": str(clone / "src"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "contrastlab.study",
                "--seeds",
                "1",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
            ],
            cwd=clone,
            env=env,
            check=True,
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=["2x1", "1x2"], help="workers x threads per worker")
    args = parser.parse_args()
    seconds = {}
    for layout in args.layouts:
        workers, threads = map(int, layout.split("x"))
        seconds[layout] = timed_study(workers, threads)
        print(f"{workers} workers x {threads} threads: {seconds[layout]:.0f} s", flush=True)
    fastest = min(seconds, key=seconds.get)
    print(" | ".join(f"{layout}: {s:.0f} s ({s / seconds[fastest]:.2f}x)" for layout, s in seconds.items()))


if __name__ == "__main__":
    main()
