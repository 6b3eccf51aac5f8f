"""`python -m contrastlab.study`: run a study grid, one run after another here (contrastlab.study.runner) or as
Dask tasks (contrastlab.study.distributed). A bad param or option is one line (exit 2); Ctrl-C stops it in one
line (exit 130), its runs so far kept."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from contrastlab.infra import params as params_module
from contrastlab.infra.stage import run_stage
from contrastlab.methods.baselines import BASELINES
from contrastlab.study import runner
from contrastlab.study.distributed import Cluster, run_study
from contrastlab.study.runner import Run, experiment_files, fixed_value, keep, plan, results_lock


class Parser(argparse.ArgumentParser):
    """A mistake in the options is one line, as a bad param is (`error: ...`, exit 2), not the long usage."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def counted(rule: params_module.Rule) -> Callable[[str], int]:
    """An argparse type: an integer option checked by `rule` as params.yaml's integers are, so that `--workers -1`
    or `--seeds 100000000` stops at once rather than wait or plan forever."""

    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text  # which no rule of integers takes
        if not rule.check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected {rule.allowed}")
        return cast(int, value)  # a rule of integers takes nothing else

    return parse


AT_LEAST_ONE = counted(params_module.int_at_least(1))


def main() -> None:
    parser = Parser(description=runner.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("study/results"), help="one folder per finished run")
    parser.add_argument(
        "--seeds",
        type=counted(cast(params_module.Rule, params_module.SCHEMA["study"]["seeds"])),  # a Rule, not Registered
        help="seeds per scenario (default: study.seeds in params.yaml)",
    )
    parser.add_argument("--grid", default="main", help="which of study.grids to run (default: main)")
    parser.add_argument("--recipe", default="protocol", help="which of study.recipes to train with")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--baselines",
        nargs="+",
        metavar="NAME",
        type=baseline_name,
        help="run only these baselines (names of the baseline registry) for the grid's datasets and "
        "settings, no scenario: e.g. the classical ones",
    )
    which.add_argument(
        "--no-baselines",
        action="store_true",
        help="run only the grid's scenarios, up to their probe and t-SNE: none of the baselines they "
        "are compared with, no MLflow run (the track stage logs the baselines too)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=fixed_value,
        help="also set this param (as `dvc exp run -S` takes it) for every run of the grid, e.g. "
        "--set probe.features=backbone; named in the runs' names; repeatable",
    )
    dask = parser.add_argument_group("on Dask (contrastlab.study.distributed): one task per run")
    dask.add_argument("--workers", type=AT_LEAST_ONE, default=0, help="an embedded Dask cluster of this many workers")
    dask.add_argument("--threads", type=AT_LEAST_ONE, default=1, help="threads per worker (embedded or jobqueue)")
    dask.add_argument("--scheduler", default="", help="the address of an existing Dask scheduler")
    dask.add_argument("--cluster", default="", help="submit workers through dask-jobqueue: slurm, pbs, ...")
    dask.add_argument("--jobs", type=AT_LEAST_ONE, default=1, help="with --cluster: how many worker jobs")
    dask.add_argument("--workdir", default="", help="where each worker keeps its clone (default: its temp folder)")
    args = parser.parse_args()
    root = Path.cwd()
    raw = params_module.read(root / "params.yaml")  # what every experiment of the study starts from
    study = params_module.validate(raw, ("study",))["study"]
    seeds = study["seeds"] if args.seeds is None else args.seeds
    runs = plan(raw, seeds, args.grid, args.recipe, dict(args.set), args.baselines, not args.no_baselines)
    with results_lock(args.results):
        if args.workers or args.scheduler or args.cluster:
            cluster = Cluster(args.workers, args.threads, args.scheduler, args.cluster, args.jobs)
            failed = run_study(root, runs, args.results, cluster, args.workdir)
            if failed:
                raise StudyFailed(f"{failed} run(s) failed (above); the others are kept: fix the cause and run again")
        else:
            run_here(root, runs, args.results)
    print(f"\nstudy complete: {len(runs)} runs in {args.results}")


def baseline_name(text: str) -> str:
    """A `--baselines` name, checked against the registry."""
    if text not in BASELINES:
        raise argparse.ArgumentTypeError(f"no baseline {text!r}; known: {', '.join(BASELINES)}")
    return text


def run_here(root: Path, runs: list[Run], results: Path) -> None:
    """The runs whose folders are missing, one after another in this repository."""
    todo = [run for run in runs if not (results / run.name).is_dir()]
    print(
        f"study: {len(runs)} runs (scenarios and baselines x seeds); "
        f"{len(runs) - len(todo)} already in {results}, {len(todo)} to run",
        flush=True,
    )
    durations: list[float] = []
    for done, run in enumerate(todo):
        left = len(todo) - done - 1
        eta = f"; about {np.mean(durations) * left / 60:.0f} min left after it" if durations else ""
        print(f"\n=== study [{done + 1}/{len(todo)}] {run.name} ({left} to go{eta}) ===", flush=True)
        start = time.perf_counter()
        keep(results / run.name, experiment_files(root, run))
        durations.append(time.perf_counter() - start)


class StudyFailed(Exception):
    """Some runs of a distributed study failed; each was reported as it did."""


def cli() -> None:
    """`python -m contrastlab.study`: a bad param is one line (exit 2); a failed experiment names its command;
    Ctrl-C (whose runs so far are kept, and the one it stopped left no half-written folder) is one line too."""
    try:
        run_stage(main, stopped="stopped: resume with the same command")
    except StudyFailed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as err:
        print(
            f"error: `{' '.join(map(str, err.cmd))}` failed (exit {err.returncode}); its output is above. "
            "Fix the cause and run the study again: finished runs are kept.",
            file=sys.stderr,
        )
        sys.exit(1)


cli()
