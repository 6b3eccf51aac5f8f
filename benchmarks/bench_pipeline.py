"""Wall time and peak memory of the real pipeline, in a fresh clone of this repository.

1. `dvc repro --force` of the default scenario from nothing (download from the mirror included; forced so
   that every stage runs, as for a new scenario, even where the committed dvc.lock matches), with the time
   from each stage's start to the next's (DVC's own work between stages counted with the stage before)
   and the training loop's own time (metrics/train.json) to compare the whole with;
2. three no-op `dvc repro` right after it (everything cached): the first apart from the later ones;
3. with `dataset: cifar10`, each stage alone and forced (`dvc repro --single-item --force <stage>`),
   for the peak resident memory of every stage on the larger dataset.

The clone uses this checkout's Python environment (the one running this script), not a new
venv. It prints a Markdown section; `--into` also puts it in this script's marked section of a file,
leaving the rest of the file as it is (benchmarks/sections.py):

    python benchmarks/bench_pipeline.py --into BENCHMARKS.md      # about 15 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402

from contrastlab.infra.machine import cpu_description  # noqa: E402
from contrastlab.methods.baselines import BASELINES  # noqa: E402
from contrastlab.study.distributed import stages_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OWNER = sections.owner_of(__file__)  # the name on its section's markers in BENCHMARKS.md
# The stages that train an encoder: the scenario's and the ceilings (the baselines trained with labels).
TRAINING_STAGES = ("train", *(f"baseline@{name}" for name, kind in BASELINES.items() if kind.uses_labels))
STAGES = (
    "download",
    "examples",
    "train",
    "embed",
    "tsne",
    "probe",
    *(f"baseline@{name}" for name in BASELINES),
    "track",
)

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
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *cmd],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) // 1024


def timed_stages(cmd: list[str], cwd: Path, env: dict) -> tuple[float, dict[str, float]]:
    """Run `cmd` (a `dvc repro`); return its wall time and, per stage it ran, the seconds from the line DVC
    prints when it starts the stage ("Running stage 'train':") to the next such line or the end."""
    start = time.perf_counter()
    starts: list[tuple[str, float]] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as dvc:
        for line in dvc.stdout:  # a stage's progress bar may leave terminal codes in front of DVC's line
            starts += [(stage, time.perf_counter()) for stage in stages_run(line)]
    end = time.perf_counter()
    if dvc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    ends = [t for _, t in starts[1:]] + [end]
    return end - start, {stage: stop - begun for (stage, begun), stop in zip(starts, ends, strict=True)}


def peak_rss_of_children() -> int:
    """The peak resident memory in MB of any process this one started and that has ended, at any depth."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sections.add_option(parser)
    args = parser.parse_args()
    if args.into:
        sections.check(args.into, OWNER)  # before the quarter of an hour, not after

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("CONTRASTLAB_MIRROR", str((ROOT / "../shared/datasets").resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # --force: training is deterministic, so the embeddings can come out exactly as the committed dvc.lock
        # records them, and DVC would then skip tsne and probe (their outputs are committed): a new scenario runs them
        full, stage_seconds = timed_stages(["dvc", "repro", "--force"], clone, env)
        full_rss = peak_rss_of_children()
        training = json.loads((clone / "metrics" / "train.json").read_text())["train_time_s"]
        noops = [run(["dvc", "repro"], clone, env) for _ in range(3)]
        dvc_rss = max(rss for _, rss in noops)

        params_file = clone / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params["dataset"] = "cifar10"
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        cifar = {stage: run(["dvc", "repro", "--single-item", "--force", stage], clone, env) for stage in STAGES}

    trains = sum(seconds for stage, seconds in stage_seconds.items() if stage in TRAINING_STAGES)
    lines = [
        f"Measured by `python {' '.join(sys.argv)}` on {cpu_description()}, in a fresh clone with this checkout's "
        "Python environment.",
        "",
        "- default `dvc repro --force` from nothing (mnist / triplet / simclr, download included, every stage run): "
        f"**{full:.0f} s** wall, "
        f"{full / training:.2f}x the training loop's own {training:.0f} s; peak stage memory {full_rss:,} MB",
        f"- the stages that train an encoder ({', '.join(TRAINING_STAGES)}) {trains:.0f} s; everything else "
        f"{full - trains:.0f} s, {(full - trains) / trains:.0%} on top of them",
        f"- no-op `dvc repro` right after: first **{noops[0][0]:.2f} s**, then {noops[1][0]:.2f} s and "
        f"{noops[2][0]:.2f} s; DVC's own peak memory {dvc_rss:,} MB",
        "",
        "Where the first `dvc repro` spends its time (from each stage's start to the next's):",
        "",
        "| stage | s | share |",
        "|---|---|---|",
        *(f"| {stage} | {seconds:.1f} | {seconds / full:.0%} |" for stage, seconds in stage_seconds.items()),
        f"| before the first stage (DVC's start-up, hashing) | {full - sum(stage_seconds.values()):.1f} | "
        f"{1 - sum(stage_seconds.values()) / full:.0%} |",
        "",
        "CIFAR-10 (triplet / simclr), each stage alone (peak of the stage or of DVC, whichever is larger):",
        "",
        "| stage | wall s | peak RSS MB |",
        "|---|---|---|",
        *(f"| {stage} | {seconds:.1f} | {rss:,} |" for stage, (seconds, rss) in cifar.items()),
    ]
    print("\n".join(lines))
    if args.into:
        sections.write(args.into, OWNER, "\n".join(lines))


if __name__ == "__main__":
    main()
