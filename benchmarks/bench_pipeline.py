"""Wall time and peak memory of the real pipeline, in a fresh clone of this repository.

1. `dvc repro` of the default scenario from nothing (download from the mirror included);
2. a no-op `dvc repro` right after it (everything cached);
3. with `dataset: cifar10`, each stage alone and forced (`dvc repro --single-item --force <stage>`),
   for the peak resident memory of every stage on the larger dataset.

The clone uses this checkout's Python environment (the one running this script), not a new
venv. It prints a Markdown section and can append it to a file:

    python benchmarks/bench_pipeline.py --append BENCHMARKS.md      # about 15 minutes
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
STAGES = ("download", "examples", "train", "embed", "tsne", "probe", "baseline@raw_pixels", "baseline@random_init",
          "baseline@supervised", "track")

# Runs a command and reports the peak resident memory of its largest descendant (a stage).
PEAK_RSS = (
    "import resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
)


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int]:
    """Run `cmd`; return (seconds, peak RSS in MB of the biggest process it started, at any depth:
    a reaped child's rusage includes its own reaped children, and DVC waits for its stages).
    Linux reports ru_maxrss in KiB."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--append", type=Path, help="append the Markdown section to this file")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("CONTRASTLAB_MIRROR", str((ROOT / "../shared/datasets").resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        full, full_rss = run(["dvc", "repro"], clone, env)
        noops = [run(["dvc", "repro"], clone, env) for _ in range(3)]
        noop, dvc_rss = min(seconds for seconds, _ in noops), max(rss for _, rss in noops)

        params_file = clone / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params["dataset"] = "cifar10"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        cifar = {stage: run(["dvc", "repro", "--single-item", "--force", stage], clone, env) for stage in STAGES}

    lines = [
        "",
        "## The pipeline (fresh clone, this checkout's environment)",
        "",
        f"- default `dvc repro` from nothing (mnist / triplet / simclr, download included): "
        f"**{full:.0f} s** wall, peak stage memory {full_rss:,} MB",
        f"- no-op `dvc repro` right after: **{noop:.2f} s** (best of 3); DVC's own peak memory {dvc_rss:,} MB",
        "",
        "CIFAR-10 (triplet / simclr), each stage alone (peak of the stage or of DVC, whichever is larger):",
        "",
        "| stage | wall s | peak RSS MB |",
        "|---|---|---|",
        *(f"| {stage} | {seconds:.1f} | {rss:,} |" for stage, (seconds, rss) in cifar.items()),
    ]
    print("\n".join(lines))
    if args.append:
        with args.append.open("a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
