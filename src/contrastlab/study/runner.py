"""The study: every scenario of a grid x `study.seeds` as a DVC experiment, plus the baselines.

    python -m contrastlab.study --results study/results      # grid `main`, recipe `protocol`
    python -m contrastlab.study --workers 2                   # on Dask (see contrastlab.study.distributed)
    python -m contrastlab.study --grid losses --recipe <name> # any grid and recipe of params.yaml
    python -m contrastlab.study --grid losses --set probe.features=backbone   # plus a param for every run

Each scenario and seed runs as `dvc exp run --temp -n <name> -S ...` (the workspace is left alone,
DVC restores unchanged stages from its run cache, the track stage logs one MLflow run for it and one
for each baseline of its dataset and seed), each baseline as `dvc exp run ... baseline@<name>`. Its small
results (metrics, t-SNE points, probe predictions, wall time) are then copied out of the
experiment into `<results>/<name>/`, a folder small enough to commit. A folder that exists is a
finished run: an interrupted study resumes where it stopped, also on another machine that has
the committed folders. A folder counts as done whatever params.yaml says now: after changing a param
that is not a grid axis, or the code, delete the folders to recompute (an experiment DVC kept from
before a param changed is then run again, not taken). Runs go seed by seed, so the
first seed of every scenario is done first, each seed's baselines before its scenarios. A baseline runs
once per dataset, seed and the params it
reads (the encoder's `model`, `probe.features`, ...) as the grid sets them; no recipe is named in it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from contrastlab.infra import params as params_module
from contrastlab.infra.errors import FileError, ParamError
from contrastlab.infra.files import now_stamp, one_line
from contrastlab.infra.machine import machine_description
from contrastlab.infra.stage import WATCHED_PID
from contrastlab.study.names import MAIN_AXES, BaselineRun, Scenario, safe

# What each finished scenario keeps: path in the experiment -> file name in its results folder.
KEPT = {
    "metrics/train.json": "train.json",
    "metrics/train.details.json": "train.details.json",
    "metrics/probe.json": "probe.json",
    "metrics/probe.details.json": "probe.details.json",
    "plots/train_loss.csv": "train_loss.csv",
    "plots/tsne.csv": "tsne.csv",
    "plots/confusion.csv": "confusion.csv",
    "metrics/examples.json": "examples.json",
}
# A scenario without its baselines stops before `track`, which depends on them and logs them to MLflow.
SCENARIO_STAGES = ("probe", "tsne")
LOCK = ".study.lock"  # in the results folder while a study writes there (results_lock)
STOP_GRACE_S = 60  # how long a stopped study waits for `dvc exp run` and its stage to clean up before killing them


@dataclass(frozen=True)
class Run:
    """One scenario or one baseline with one seed, and the `-S` values that make it."""

    identity: Scenario | BaselineRun
    overrides: dict = field(hash=False)
    params: dict = field(hash=False, default_factory=dict)  # params.yaml as the run sees it (study.json keeps it)
    stages: tuple[str, ...] = ()  # what `dvc exp run` targets; none: the whole pipeline

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def is_baseline(self) -> bool:
        return isinstance(self.identity, BaselineRun)


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


def with_values(raw: dict, point: dict) -> dict:
    """A copy of `raw` with each `path: value` of `point` set, as `dvc exp run -S path=value ...` would."""
    changed = copy.deepcopy(raw)
    for path, value in point.items():
        set_param(changed, path, value)
    return changed


def get_param(raw: dict, path: str):
    node, key = _parent(raw, path)
    return node[key]


def variant(point: dict, defaults: dict) -> str:
    """The params of `point` beyond dataset/loss/aug/seed where it differs from params.yaml, as `<axis>-<value>`
    words, so that the same scenario has one name in every grid (a recipe's own values are named by it)."""
    return "-".join(
        safe(f"{path.split('.')[-1]}-{value}")
        for path, value in point.items()
        if path not in (*MAIN_AXES, "seed") and value != get_param(defaults, path)
    )


def plan(
    raw: dict,
    seeds: int,
    grid_name: str = "main",
    recipe: str = "protocol",
    fixed: dict | None = None,
    only_baselines: list[str] | None = None,
    with_baselines: bool = True,
) -> list[Run]:
    """For seeds 0..seeds-1, seed by seed: the baselines the grid's scenarios compare with (first: they train
    little and every comparison needs them), then every point of the grid; all validated up front.
    `only_baselines`: just these baselines (names of BASELINES) for the grid's settings, and no scenario.
    `with_baselines=False`: the scenarios alone, up to their probe and t-SNE (their baselines exist, or cost
    more than the answer needs; no MLflow run, as `track` logs the baselines too)."""
    study = raw["study"]
    for kind, name, known in (("grid", grid_name, study["grids"]), ("recipe", recipe, study["recipes"])):
        if name not in known:
            raise ParamError(f"params.yaml: no study {kind} '{name}'; known: {', '.join(known)}")
    grid, recipe_values = study["grids"][grid_name], study["recipes"][recipe]
    for path, value in (fixed or {}).items():  # else the grid's own values (and seeds 0..N-1) replace it, unsaid
        if path == "seed":
            raise ParamError(f"--set {set_flag(path, value)}: a study runs seeds 0..N-1; choose N with --seeds")
        if path in grid:
            raise ParamError(
                f"--set {set_flag(path, value)}: study grid '{grid_name}' varies {path} "
                f"({', '.join(map(str, grid[path]))}); choose a grid that does not vary it, or add one"
            )
    runs: list[Run] = []
    for seed in range(seeds):
        scenarios: list[Run] = []
        for values in itertools.product(*grid.values()):
            axes = dict(zip(grid, values, strict=True))
            axes = {**(fixed or {}), **axes}  # `--set` values: one more axis of one value, named like the others
            point = {**recipe_values, **axes, "seed": seed}
            scenario = params_module.validate_all(with_values(raw, point))
            dataset, loss, aug = (scenario[axis] for axis in MAIN_AXES)
            identity: Scenario | BaselineRun = Scenario(
                dataset, loss, aug, variant=variant(axes, raw), recipe=recipe, seed=seed
            )
            scenarios.append(
                Run(
                    identity,
                    {**{axis: scenario[axis] for axis in MAIN_AXES}, **point},
                    scenario,
                    () if with_baselines else SCENARIO_STAGES,
                )
            )
        names = [run.name for run in scenarios]
        if len(set(names)) < len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ParamError(
                f"params.yaml: study grid '{grid_name}' gives two scenarios the name {twice[0]}; "
                "axes whose last name part is the same need different values"
            )
        read_by_baselines = set(params_module.expand(params_module.BASELINE))
        settings: dict[str, dict] = {}  # each distinct setting once, its axes in the grid's order (as in names)
        for run in scenarios:
            setting = {path: value for path, value in run.overrides.items() if path in read_by_baselines}
            settings.setdefault(json.dumps(setting, sort_keys=True), setting)
        for overrides in settings.values():
            used = params_module.validate(with_values(raw, overrides), params_module.BASELINE)
            kinds = study["baselines"] if only_baselines is None else only_baselines
            for kind in kinds if with_baselines else []:
                identity = BaselineRun(overrides["dataset"], kind, seed, variant=variant(overrides, raw))
                runs.append(Run(identity, overrides, used, (f"baseline@{kind}",)))
        runs += scenarios if only_baselines is None else []
    return runs


def fixed_value(text: str) -> tuple[str, object]:
    """`--set key=value` as (key, value), the value read as YAML as `dvc exp run -S` reads it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:  # argparse turns only ArgumentTypeError (and ValueError) into one line
        problem = getattr(err, "problem", None) or err
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({one_line(problem, 120)})") from None


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


def made_with(root: Path, ref: str, run: Run) -> bool:
    """Whether the experiment at `ref` read the params `run` asks for: a name says only the grid's values, so an
    experiment kept from before a change of another param (or of the recipe's values) must not be taken for it."""
    saved = yaml.safe_load(git(root, "show", f"{ref}:params.yaml"))
    reads = params_module.BASELINE if run.is_baseline else params_module.SCENARIO
    try:
        return params_module.validate(saved, reads) == run.params
    except ParamError:
        return False


def keep(folder: Path, files: dict[str, str]) -> None:
    """Write a finished run's files into `folder` all at once: a folder that exists is complete. A write that
    fails or is interrupted (Ctrl-C) leaves no `.partial` folder, which `make mlflow` would refuse."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        for name, text in files.items():
            (partial / name).write_text(text)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _locked(path: Path) -> IO[str]:
    """`path` open and flock-ed by this process, or a FileError naming the study that holds it."""
    while True:
        lock = path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another study"
            lock.close()
            raise FileError(
                f"{path.parent}: another study writes there ({holder}); wait for it to finish or stop "
                "it, then run this one again"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(lock.fileno()), os.stat(path)):
                return lock
        lock.close()  # its holder removed the file as it finished, after we opened it: lock the one there now


@contextlib.contextmanager
def results_lock(results: Path) -> Iterator[None]:
    """Hold `<results>/.study.lock` (this study's pid and host in it) while the study writes to `results`: a second
    study on the same folder stops in one line naming the first, rather than train the same runs beside it and
    race it for their folders. A flock, so a study that died (even of SIGKILL) holds it no more; the `.partial`
    folders such a study left half-written are then removed, as nobody else writes there."""
    made = not results.exists()
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK
    with _locked(path) as lock:
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, started {now_stamp()}\n")
        lock.flush()
        for stale in results.glob("*.partial"):
            shutil.rmtree(stale)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still held: a study that opened it meanwhile sees it gone (_locked)
            if made and not any(results.iterdir()):  # a study stopped before its first run leaves no empty folder
                results.rmdir()


def run_child(cmd: list[str], cwd: Path, env: dict | None = None, output=None) -> None:
    """`cmd` as `subprocess.run(check=True)` runs it, made to stop with this process. Its stages watch this
    process (WATCHED_PID: they stop when it is gone, even killed with SIGKILL, rather than train on beside the
    resumed run). It runs in a session of its own, so that a Ctrl-C here reaches it once, from here: it is
    then waited for while DVC and the stage clean up (MLflow ends a half-logged run), not killed at once."""
    env = {**(os.environ if env is None else env), WATCHED_PID: str(os.getpid())}
    child = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True
    )
    try:
        code = child.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(ProcessLookupError):  # all of them may have ended already
            os.killpg(child.pid, signal.SIGINT)
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        raise
    if code:
        raise subprocess.CalledProcessError(code, cmd)


def finished(info: dict, start: float) -> str:
    """study.json: how, when and on what machine a run was made, and its wall time."""
    stamp = {"wall_s": round(time.perf_counter() - start, 1), "finished": now_stamp(), "machine": machine_description()}
    return json.dumps({**info, **stamp}, indent=2) + "\n"


def experiment_files(root: Path, run: Run, env: dict | None = None, output=None) -> dict[str, str]:
    """`dvc exp run` the scenario (its pipeline) or the baseline (its stage) in the repository `root`
    unless DVC already holds the experiment, and return the files its results folder keeps. `env` and
    `output` (a file for DVC's output) are for runs on a Dask worker; by default DVC prints here."""
    ref = experiment_ref(root, run.name)
    start = time.perf_counter()
    kind = run.identity.baseline if isinstance(run.identity, BaselineRun) else None  # run.is_baseline
    if ref is not None and not made_with(root, ref, run):  # a param changed since: it is run again
        run_child(["dvc", "exp", "remove", run.name], root, env, output)
        ref = None
    if ref is None:
        flags = [arg for path, value in run.overrides.items() for arg in ("-S", set_flag(path, value))]
        run_child(["dvc", "exp", "run", "--temp", "-n", run.name, *flags, *run.stages], root, env, output)
        ref = experiment_ref(root, run.name)
        if ref is None:
            raise RuntimeError(f"dvc exp run finished but experiment {run.name} is missing")
    baseline = f"metrics/baselines/{kind}"
    kept = {f"{baseline}.json": "probe.json", f"{baseline}.details.json": "probe.details.json"} if kind else KEPT
    files = {name: git(root, "show", f"{ref}:{path}") + "\n" for path, name in kept.items()}
    files["study.json"] = finished(
        {
            "name": run.name,
            **run.identity.fields(),
            "overrides": run.overrides,
            "params": run.params,
            "experiment_commit": git(root, "rev-parse", ref),
            "baseline_commit": git(root, "rev-parse", "HEAD"),
        },
        start,
    )
    return files
