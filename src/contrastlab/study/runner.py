"""The study: every scenario of a grid x `study.seeds` as a DVC experiment, plus the baselines.

    python -m contrastlab.study --results study/results                  # grid `main`, recipe `protocol`
    python -m contrastlab.study --grid losses --recipe <name>             # any grid and recipe of params.yaml

Each scenario and seed runs as `dvc exp run --temp -n <name> -S ...` (the workspace is left alone,
DVC restores unchanged stages from its run cache, the track stage logs one MLflow run). Its small
results (metrics, t-SNE points, probe predictions, wall time) are then copied out of the
experiment into `<results>/<name>/`, a folder small enough to commit. A folder that exists is a
finished run: an interrupted study resumes where it stopped, also on another machine that has
the committed folders. A folder counts as done whatever params.yaml says now: after changing a param
that is not a grid axis, or the code, delete the folders to recompute. Runs go seed by seed, so the
first seed of every scenario is done first. Baselines use params.yaml's `train` values, not the recipe.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contrastlab.infra import params as params_module
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.datasets import load_split
from contrastlab.methods.losses import LOSSES
from contrastlab.infra.machine import cpu_description
from contrastlab.pipeline.examples import check_negatives
from contrastlab.infra.errors import ParamError

# What each finished scenario keeps: path in the experiment -> file name in its results folder.
KEPT = {
    "metrics/train.json": "train.json",
    "metrics/probe.json": "probe.json",
    "plots/train_loss.csv": "train_loss.csv",
    "plots/tsne.csv": "tsne.csv",
    "plots/confusion.csv": "confusion.csv",
    "metrics/pairs.json": "pairs.json",
}
OPTIONAL = {"metrics/pairs.json"}  # not written by versions of the pipeline before it existed
MAIN_AXES = ("dataset", "loss", "aug")


@dataclass(frozen=True)
class Run:
    """One scenario with one seed (`overrides` are its `-S` values), or one baseline on one dataset and seed."""

    name: str
    overrides: dict = field(hash=False)
    baseline: str | None = None
    recipe: str = "protocol"

    @property
    def seed(self) -> int:
        return self.overrides["seed"]


def _parent(raw: dict, path: str) -> tuple[dict, str]:
    """The section holding `path` ("train.lr" -> raw["train"], "lr"), or a ParamError if there is no such param."""
    *parents, key = path.split(".")
    node = raw
    for part in parents:
        if not isinstance(node.get(part), dict):
            raise ParamError(f"params.yaml: study axis '{path}' is not a param (no section '{part}')")
        node = node[part]
    if key not in node:
        raise ParamError(f"params.yaml: study axis '{path}' is not a param")
    return node, key


def set_param(raw: dict, path: str, value) -> None:
    """raw["train"]["lr"] = value for path "train.lr", as `dvc exp run -S train.lr=value` would."""
    node, key = _parent(raw, path)
    node[key] = value


def get_param(raw: dict, path: str):
    node, key = _parent(raw, path)
    return node[key]


def run_name(overrides: dict, axes: list[str], defaults: dict, recipe: str) -> str:
    """`<dataset>-<loss>-<aug>[-<axis>-<value>...][-<recipe>]-s<seed>`, a valid DVC experiment name.
    Other grid axes appear only where they differ from params.yaml, so that the same scenario has
    one name in every grid; the recipe's own values are named by the recipe."""
    extras = [f"{path.split('.')[-1]}-{overrides[path]}" for path in axes
              if path not in MAIN_AXES and overrides[path] != get_param(defaults, path)]
    tail = [] if recipe == "protocol" else [recipe]
    name = "-".join([*(str(overrides[axis]) for axis in MAIN_AXES), *extras, *tail, f"s{overrides['seed']}"])
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)  # lists, spaces, ':' or '/' cannot be in a git ref


def plan(raw: dict, seeds: int, grid_name: str = "main", recipe: str = "protocol") -> list[Run]:
    """Every point of the grid, then every baseline, for seeds 0..seeds-1, seed by seed; all validated up front."""
    study = raw["study"]
    for kind, name, known in (("grid", grid_name, study["grids"]), ("recipe", recipe, study["recipes"])):
        if name not in known:
            raise ParamError(f"params.yaml: no study {kind} '{name}'; known: {', '.join(known)}")
    grid, recipe_values = study["grids"][grid_name], study["recipes"][recipe]
    runs: list[Run] = []
    for seed in range(seeds):
        scenarios: list[Run] = []
        for values in itertools.product(*grid.values()):
            point = {**recipe_values, **dict(zip(grid, values)), "seed": seed}
            scenario = copy.deepcopy(raw)
            for path, value in point.items():
                set_param(scenario, path, value)
            params_module.validate_all(scenario)
            check_negatives(LOSSES[scenario["loss"]].examples, scenario["pairs"]["negatives"])
            overrides = {**{axis: scenario[axis] for axis in MAIN_AXES}, **point}
            scenarios.append(Run(run_name(overrides, list(grid), raw, recipe), overrides, recipe=recipe))
        names = [run.name for run in scenarios]
        if len(set(names)) < len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ParamError(f"params.yaml: study grid '{grid_name}' gives two scenarios the name {twice[0]}; "
                             "axes whose last name part is the same need different values")
        runs += scenarios
        for dataset in dict.fromkeys(run.overrides["dataset"] for run in scenarios):
            for kind in study["baselines"]:
                runs.append(Run(f"baseline-{dataset}-{kind}-s{seed}", {"dataset": dataset, "seed": seed}, kind))
    return runs


def set_flag(path: str, value) -> str:
    """`-S path=value` with value written as YAML reads it back (a string stays a string)."""
    return f"{path}={value if isinstance(value, str) else json.dumps(value)}"


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def experiment_ref(root: Path, name: str) -> str | None:
    """The experiment `name` made on the current commit, if DVC has it."""
    head = git(root, "rev-parse", "HEAD")
    ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref], cwd=root, capture_output=True)
    return ref if found.returncode == 0 else None


def keep(folder: Path, files: dict[str, str]) -> None:
    """Write a finished run's files into `folder` all at once: a folder that exists is complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, text in files.items():
        (partial / name).write_text(text)
    partial.rename(folder)


def finished(info: dict, start: float) -> str:
    """study.json: how, when and on what machine a run was made, and its wall time."""
    stamp = {"wall_s": round(time.perf_counter() - start, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "machine": cpu_description()}
    return json.dumps({**info, **stamp}, indent=2) + "\n"


def run_scenario(root: Path, run: Run, folder: Path) -> None:
    """`dvc exp run` the scenario unless DVC already holds it, then keep its results."""
    ref = experiment_ref(root, run.name)
    start = time.perf_counter()
    if ref is None:
        flags = [arg for path, value in run.overrides.items() for arg in ("-S", set_flag(path, value))]
        subprocess.run(["dvc", "exp", "run", "--temp", "-n", run.name, *flags], cwd=root, check=True)
        ref = experiment_ref(root, run.name)
        if ref is None:
            raise RuntimeError(f"dvc exp run finished but experiment {run.name} is missing")
    present = set(git(root, "ls-tree", "-r", "--name-only", ref).splitlines())
    files = {name: git(root, "show", f"{ref}:{path}") + "\n" for path, name in KEPT.items()
             if path in present or path not in OPTIONAL}
    files["study.json"] = finished({"name": run.name, "overrides": run.overrides, "recipe": run.recipe,
                                    "experiment_commit": git(root, "rev-parse", ref),
                                    "baseline_commit": git(root, "rev-parse", "HEAD")}, start)
    keep(folder, files)


def run_baseline(root: Path, raw: dict, run: Run, folder: Path) -> None:
    """Score one baseline on the probe split of its seed; keep and track its metrics."""
    from contrastlab.methods.baselines import BASELINES
    from contrastlab.evaluate import headline, probe
    from contrastlab.methods.losses import epochs_and_lr
    from contrastlab.methods.encoders import pick_device
    from contrastlab.infra.tracking import git_commit, log_scenario

    dataset, seed = run.overrides["dataset"], run.seed
    data_dir = root / "data" / "datasets" / dataset
    train_images, train_labels = load_split(data_dir, "train")
    test_images, test_labels = load_split(data_dir, "test")
    epochs, lr = epochs_and_lr("triplet", raw["train"])
    start = time.perf_counter()
    features = BASELINES[run.baseline](
        {"train_images": train_images, "train_labels": train_labels, "test_images": test_images},
        seed=seed, embed_batch=raw["embed"]["batch_size"], anchors_per_class=raw["pairs"]["anchors_per_class"],
        epochs=epochs, batch_size=raw["train"]["batch_size"], lr=lr, device=pick_device(),
    )
    q = raw["probe"]
    scores = probe(features, test_labels, **q, seed=seed)
    metrics = headline(scores)
    settings = {"dataset": dataset, "baseline": run.baseline, "seed": seed, "probe": q}
    if run.baseline == "supervised":
        settings["train"] = {"epochs": epochs, "lr": lr, "batch_size": raw["train"]["batch_size"]}
    scenario = f"{dataset}-baseline-{run.baseline}"
    log_scenario(run_name=scenario, params=settings,
                 metrics={"probe_top1": metrics["top1"], "probe_top3": metrics["top3"], "knn_top1": metrics["knn"]},
                 epoch_losses=[], artifacts=[],
                 tags={"scenario": scenario, "dataset": dataset, "baseline": run.baseline, "seed": str(seed),
                       "git_commit": git_commit(root)},
                 root=root)
    keep(folder, {"probe.json": json.dumps(metrics, indent=2) + "\n",
                  "study.json": finished({"name": run.name, **settings}, start)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("study/results"), help="one folder per finished run")
    parser.add_argument("--seeds", type=int, help="seeds per scenario (default: study.seeds in params.yaml)")
    parser.add_argument("--grid", default="main", help="which of study.grids to run (default: main)")
    parser.add_argument("--recipe", default="protocol", help="which of study.recipes to train with")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    root = Path.cwd()
    raw = params_module.read(args.params)
    study = params_module.validate(raw, "study", top=False)["study"]
    seeds = study["seeds"] if args.seeds is None else args.seeds
    if seeds < 1:
        raise ParamError(f"--seeds {seeds}: a study needs at least one seed")
    runs = plan(raw, seeds, args.grid, args.recipe)
    missing = sorted({run.overrides["dataset"] for run in runs} - set(raw["download"]["datasets"]))
    if missing:
        raise ParamError(f"params.yaml: the study uses {', '.join(missing)}, not in download.datasets")

    subprocess.run(["dvc", "repro", "download"], cwd=root, check=True)  # the baselines read the arrays
    todo = [run for run in runs if not (args.results / run.name).is_dir()]
    print(f"study: {len(runs)} runs (scenarios and baselines x {seeds} seeds); "
          f"{len(runs) - len(todo)} already in {args.results}, {len(todo)} to run", flush=True)
    durations: list[float] = []
    for done, run in enumerate(todo):
        left = len(todo) - done - 1
        eta = f"; about {np.mean(durations) * left / 60:.0f} min left after it" if durations else ""
        print(f"\n=== study [{done + 1}/{len(todo)}] {run.name} ({left} to go{eta}) ===", flush=True)
        start = time.perf_counter()
        if run.baseline:
            run_baseline(root, raw, run, args.results / run.name)
        else:
            run_scenario(root, run, args.results / run.name)
        durations.append(time.perf_counter() - start)
    print(f"\nstudy complete: {len(runs)} runs in {args.results}")


if __name__ == "__main__":
    try:
        run_stage(main)  # a bad param or missing data: one line, exit 2
    except subprocess.CalledProcessError as err:
        print(f"error: `{' '.join(map(str, err.cmd))}` failed (exit {err.returncode}); its output is above. "
              "Fix the cause and run the study again: finished runs are kept.", file=sys.stderr)
        sys.exit(1)
