"""The study on Dask: every run (a scenario or a baseline, one seed) is one task that runs it exactly as the
local study does (`dvc exp run --temp ...`, whose track stage logs the MLflow run), in a clone of the
worker's own at the study's commit with the study's params.yaml, then pushes the experiment (`dvc exp push`:
its git ref, and its data unless the workers share this repository's DVC cache) and returns the small
result files, which the driver writes to `<results>/<name>/` as the local study does. So a distributed study
resumes like a local one, and either can finish the other's.

    python -m contrastlab.study --workers 2                          # an embedded LocalCluster on 127.0.0.1
    python -m contrastlab.study --scheduler tcp://10.0.0.5:8786      # an existing Dask cluster
    python -m contrastlab.study --cluster slurm --jobs 20            # workers as SLURM jobs (dask-jobqueue)

Each worker runs one study task at a time (it holds the worker resource `study=1`; start workers of an
existing cluster with `--resources study=1`) with all its threads. A worker that dies mid-run costs that
run's retry on another worker; a stage that stops on a user's mistake (`error: ...`, exit 2) is reported
once and not retried. Embedded workers share this repository: its git refs, DVC cache and MLflow store.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from contrastlab.infra.errors import ParamError
from contrastlab.infra.files import one_line
from contrastlab.study.names import safe
from contrastlab.study.runner import Run, experiment_files, keep

SLOT = "study"  # the worker resource a task holds: one study run per worker at a time, with all its threads
CODE = ("dvc.yaml", "stages", "src", "pyproject.toml", ".dvc/config")  # workers take these from the commit alone


@dataclass(frozen=True)
class Source:
    """Where and how a worker runs a study: a clone of `remote` at `commit` with the study's `params` text.
    `env` goes to the stages (MLflow's URI); `workdir` holds the worker's clone (empty: its temporary folder);
    `cache` is a DVC cache all workers share (empty: each clone its own, pushed to the DVC remote)."""

    remote: str
    commit: str
    params: str
    user: tuple[str, str]  # git's user.name and user.email, which `dvc exp run` commits with
    env: dict
    workdir: str = ""
    cache: str = ""


@dataclass
class Cluster:
    """Which Dask to run on: an embedded LocalCluster of `workers` (the default), an existing scheduler's
    address, or `jobs` workers submitted through dask-jobqueue's `cluster` ("slurm", "pbs", ...)."""

    workers: int = 0
    threads: int = 1
    scheduler: str = ""
    cluster: str = ""
    jobs: int = 0

    @property
    def embedded(self) -> bool:
        return not (self.scheduler or self.cluster)


def user_error(output: str) -> str | None:
    """The one line a stage printed when it stopped on a user's mistake (contrastlab.infra.stage: `error: ...`,
    exit 2), found in `dvc exp run`'s output: running it again cannot help."""
    errors = re.findall(r"^error: (.+)$", output, flags=re.MULTILINE)
    return errors[-1] if errors and re.search(r"exited with 2$", output, flags=re.MULTILINE) else None


def sh(*cmd: str, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {one_line(done.stderr, 400)}")
    return done.stdout.strip()


@contextlib.contextmanager
def worker_clone(source: Source, worker: str) -> Iterator[Path]:
    """The worker's clone at the study's commit with its params.yaml, made once and reused by its later tasks;
    made afresh when a task died in it (its `.busy` mark is left), as DVC's locks and temporary experiments
    may be half-written."""
    base = Path(source.workdir or tempfile.gettempdir()) / "contrastlab-workers"
    clone = base / safe(worker)
    busy = clone.with_name(clone.name + ".busy")
    if busy.exists() or not (clone / ".git").is_dir():
        if clone.exists():  # moved aside first: a dead task's stages may still write into it for a second
            dead = clone.with_name(f"{clone.name}.dead-{os.getpid()}-{time.time_ns()}")
            clone.rename(dead)
            shutil.rmtree(dead, ignore_errors=True)
        base.mkdir(parents=True, exist_ok=True)
        sh("git", "clone", "--quiet", source.remote, str(clone), cwd=base)
        sh("git", "config", "user.name", source.user[0], cwd=clone)
        sh("git", "config", "user.email", source.user[1], cwd=clone)
        if source.cache:
            sh("dvc", "cache", "dir", "--local", source.cache, cwd=clone)
    busy.touch()
    known = subprocess.run(["git", "cat-file", "-e", f"{source.commit}^{{commit}}"], cwd=clone, capture_output=True)
    if known.returncode != 0:  # a clone kept from an earlier study: git's "fatal: Not a valid object" is expected
        sh("git", "fetch", "--quiet", "origin", cwd=clone)
    sh("git", "checkout", "--quiet", "--force", source.commit, cwd=clone)
    (clone / "params.yaml").write_text(source.params)
    yield clone
    busy.unlink()


def use_worker_threads() -> str:
    """The threads Dask gave this worker, set for torch here (study.json's machine line says it) and returned for
    the stages' OMP_NUM_THREADS (Dask starts workers with one)."""
    import torch
    from distributed import get_worker

    threads = get_worker().state.nthreads
    torch.set_num_threads(threads)
    return str(threads)


def worker_gpu(worker: str, gpus: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The GPU a worker's stages see: with several GPUs and none assigned to the process already (a cluster's
    scheduler sets CUDA_VISIBLE_DEVICES), worker N of the embedded cluster gets GPU N modulo their count, so
    the workers spread over the GPUs instead of all training on the first. One GPU or none: nothing to choose."""
    if gpus < 2 or "CUDA_VISIBLE_DEVICES" in environ or not worker.isdigit():
        return {}
    return {"CUDA_VISIBLE_DEVICES": str(int(worker) % gpus)}


def run_on_worker(source: Source, run: Run, *after) -> dict:
    """The Dask task: `run` in this worker's clone with the worker's threads, its experiment pushed to the
    clone's origin. Returns {"files": ...} for the results folder, or {"error": line} for a user's mistake.
    `after`: the tasks it waits for (its baselines), so it restores them from the run cache."""
    from distributed import get_worker

    worker = get_worker()
    threads = use_worker_threads()
    with worker_clone(source, str(worker.name)) as clone:
        # an experiment origin already holds (its results folder deleted, or a driver stopped after the push) is
        # kept, not trained again, as the local study does
        ref = f"refs/exps/{source.commit[:2]}/{source.commit[2:]}/{run.name}"
        subprocess.run(["git", "fetch", "--quiet", "origin", f"+{ref}:{ref}"], cwd=clone, capture_output=True)
        env = {
            **os.environ,
            **source.env,
            "PYTHONPATH": str(clone / "src"),
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
            **worker_gpu(str(worker.name), torch.cuda.device_count(), os.environ),
        }  # its stages stop if this worker dies (run_child)
        log = clone.with_name(f"{clone.name}.log")
        try:
            with log.open("w") as output:
                files = experiment_files(clone, run, env, output)
        except subprocess.CalledProcessError:
            text = log.read_text()
            if message := user_error(text):
                return {"error": message}
            tail = "\n".join(text.splitlines()[-15:])
            raise RuntimeError(f"{run.name} failed on worker {worker.name}; the end of its output:\n{tail}") from None
        # --force: origin may hold an experiment of this name made with params since changed (it was run again)
        sh(
            "dvc",
            "exp",
            "push",
            "--force",
            *(["--no-cache"] if source.cache else []),
            "origin",
            run.name,
            cwd=clone,
            env=env,
        )
    return {"files": files, "worker": str(worker.name), "stages_run": stages_run(log.read_text())}


def stages_run(output: str) -> list[str]:
    """The stages a `dvc exp run` ran rather than restored, from the line DVC prints as it starts each."""
    return re.findall(r"Running stage '([^']+)'", output)


def kept_baseline_line(name: str, outcome: dict, folder: Path) -> str:
    """What became of a kept baseline's task: restored from this DVC cache, or trained again (DVC found
    its code or data changed since the folder was made, so the cache did not hold it)."""
    if outcome["stages_run"]:
        how = (
            f"trained again into this DVC cache (ran {', '.join(outcome['stages_run'])}: "
            "changed since the folder was made)"
        )
    else:
        how = "restored from this DVC cache"
    return f"{name} on worker {outcome['worker']}: {how}; {folder} kept as it was"


def needs(run: Run, runs: list[Run]) -> list[Run]:
    """The baselines among `runs` that scenario `run` compares with: its dataset and seed with the same values
    of the params baselines read (how `plan` made them), so its task restores them rather than train them."""
    if run.is_baseline:
        return []
    return [
        other
        for other in runs
        if other.is_baseline
        and all(path in run.overrides and run.overrides[path] == value for path, value in other.overrides.items())
    ]


def kept_baselines_needed(runs: list[Run], todo: list[Run]) -> list[Run]:
    """The baselines of `runs` not to run (their folders exist) that a scenario of `todo` needs. A folder does
    not put them in this DVC cache (a study kept from another machine): each runs once as a task of its own (a
    cache hit where the cache has it), not inside every scenario task that needs it, two workers at a time."""
    needed = {baseline.name for scenario in todo for baseline in needs(scenario, runs)}
    return [run for run in runs if run.name in needed and run not in todo]


def source_for(root: Path, cluster: Cluster, workdir: str) -> Source:
    """What the workers run: this repository's commit (its code committed: workers never see this workspace)
    and the params.yaml the study was planned with. Embedded workers clone this repository and share its
    DVC cache and MLflow store; others clone `origin` and log to `MLFLOW_TRACKING_URI`."""
    changed = sh("git", "status", "--porcelain", "--untracked-files=no", "--", *CODE, cwd=root)
    if changed:
        raise ParamError(
            f"uncommitted changes to the pipeline's code ({one_line(changed, 120)}): workers run the "
            "study's commit, so commit them first"
        )
    params, commit = (root / "params.yaml").read_text(), sh("git", "rev-parse", "HEAD", cwd=root)
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not cluster.embedded:
        if not tracking:
            raise ParamError(
                "workers on other machines log to the MLflow tracking server in MLFLOW_TRACKING_URI; "
                "set it (README: The study on a cluster)"
            )
        sh("git", "fetch", "--quiet", "origin", cwd=root)
        if not sh("git", "branch", "--remotes", "--contains", commit, cwd=root):
            raise ParamError(f"commit {commit[:8]} is not on origin: workers clone it from there, so push it first")
        default = subprocess.run(["dvc", "remote", "default", "--project"], cwd=root, capture_output=True, text=True)
        if default.returncode != 0 or not default.stdout.strip():
            raise ParamError(
                "workers push their experiments' data to the DVC remote of the commit; add one and commit "
                "it (dvc remote add -d ..., git commit .dvc/config)"
            )
    name, email = (
        subprocess.run(["git", "config", key], cwd=root, capture_output=True, text=True).stdout.strip()
        for key in ("user.name", "user.email")
    )
    user = (name, email)
    if not all(user):
        raise ParamError("workers commit each experiment as you: set git config user.name and user.email")
    if not cluster.embedded:
        return Source(
            sh("git", "remote", "get-url", "origin", cwd=root),
            commit,
            params,
            user,
            {"MLFLOW_TRACKING_URI": tracking},
            workdir,
        )
    from contrastlab.infra.tracking import open_store, tracking_uri
    from contrastlab.pipeline.download import MIRROR_ENV, mirror_folder

    with open_store(root):  # made here, so its runs' artifacts go to this repository's mlruns/
        pass
    env = {"MLFLOW_TRACKING_URI": tracking_uri(root)}
    mirror = mirror_folder(yaml.safe_load(params).get("download", {}).get("mirror"), root)
    if mirror:  # the workers' clones lie deeper in this tree: a mirror relative to this root would miss there
        env[MIRROR_ENV] = str(mirror.resolve())
    return Source(
        str(root),
        commit,
        params,
        user,
        env,
        workdir or str(root / ".dvc" / "tmp" / "dask-workers"),
        str(root / ".dvc" / "cache"),
    )


def start_cluster(cluster: Cluster):
    """The embedded LocalCluster on 127.0.0.1, or a dask-jobqueue cluster (`cluster.cluster`: slurm, pbs, ...)
    whose scheduler, workers and driver talk TLS with temporary certificates; its jobs are submitted by `scale`."""
    from distributed import LocalCluster

    if not cluster.cluster:
        return LocalCluster(
            n_workers=cluster.workers,
            threads_per_worker=cluster.threads,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            resources={SLOT: 1},
        )
    import dask_jobqueue

    kind = getattr(dask_jobqueue, f"{cluster.cluster.upper()}Cluster", None)
    if kind is None:
        raise ParamError(f"--cluster {cluster.cluster}: dask-jobqueue has no such cluster (slurm, pbs, sge, lsf, ...)")
    try:
        return kind(
            cores=cluster.threads,
            processes=1,
            worker_extra_args=["--resources", f"{SLOT}=1"],
            security=True,
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
        )
    except ValueError as err:  # e.g. no memory per job in Dask's jobqueue config
        raise ParamError(f"--cluster {cluster.cluster}: {one_line(err, 200)} (Dask's jobqueue config)") from None


@contextlib.contextmanager
def environment_kept():
    """This process's environment as it was, at the end. Dask's nanny sets its workers' variables
    (OMP_NUM_THREADS=1 and others) in the process that starts them and leaves them there, so every later
    child of the driver (a pytest session's `dvc repro`, say) would train on one thread: other sums, other
    numbers."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def connect(cluster: Cluster):
    """A Dask client of the chosen cluster (closed, and an embedded or jobqueue cluster stopped, at the end)."""
    from distributed import Client

    if cluster.scheduler:
        try:
            client = Client(cluster.scheduler, timeout=30)  # TLS and other security: Dask's own config (README)
        except (OSError, TimeoutError) as err:
            raise ParamError(
                f"--scheduler {cluster.scheduler}: no Dask scheduler answers there ({one_line(err, 150)})"
            ) from None
        with client:
            yield client
        return
    with environment_kept(), start_cluster(cluster) as made, Client(made) as client:
        if cluster.cluster:
            made.scale(jobs=cluster.jobs)
        yield client


def run_study(root: Path, runs: list[Run], results: Path, cluster: Cluster, workdir: str = "") -> int:
    """Run the `runs` whose folders are missing as Dask tasks, keeping each as it finishes; a scenario's task
    waits for its baselines'. One line per finished run with an ETA. Returns how many runs failed."""
    from distributed import as_completed

    todo = [run for run in runs if not (results / run.name).is_dir()]
    print(
        f"study: {len(runs)} runs; {len(runs) - len(todo)} already in {results}, {len(todo)} to run on Dask", flush=True
    )
    if not todo:
        return 0
    source = source_for(root, cluster, workdir)
    again = kept_baselines_needed(runs, todo) if source.cache else []
    restored = {run.name for run in again}
    if again:
        print(
            f"study: first {len(again)} baselines kept in {results} into this DVC cache, for the scenarios that "
            f"compare with them (their folders stay as they are; one whose code changed since trains again)",
            flush=True,
        )
    failed = 0
    with connect(cluster) as client:
        workers = client.scheduler_info()["workers"].values()
        slots = sum(1 for worker in workers if worker.get("resources", {}).get(SLOT))
        print(f"Dask: {client.scheduler.address}, {len(workers)} workers ({slots} with a study slot)", flush=True)
        if cluster.scheduler and not slots:
            print(
                f"warning: no worker of {cluster.scheduler} has the resource {SLOT}=1 yet: the study waits for one "
                f"(start workers with `dask worker {cluster.scheduler} --resources {SLOT}=1`)",
                flush=True,
            )
        tasks: dict = {}
        for run in again + todo:  # with a shared DVC cache a scenario restores its baselines: then it waits for them
            after = [tasks[b.name] for b in needs(run, again + todo)] if source.cache else []
            tasks[run.name] = client.submit(
                run_on_worker, source, run, *after, key=f"study-{run.name}", pure=False, retries=1, resources={SLOT: 1}
            )
        names = {future.key: name for name, future in tasks.items()}
        start = time.perf_counter()
        for done, future in enumerate(as_completed(tasks.values()), start=1):
            name = names[future.key]
            left = len(tasks) - done
            eta = f"; about {(time.perf_counter() - start) / done * left / 60:.0f} min left" if left else ""
            if future.status != "finished":  # an error after its retries, or cancelled (the scheduler went away)
                failed += 1
                reason = future.exception() if future.status == "error" else future.status
                print(f"[{done}/{len(tasks)}] {name} failed: {one_line(reason, 300)}{eta}", flush=True)
                continue
            outcome = future.result()
            if "error" in outcome:
                failed += 1
                print(f"[{done}/{len(tasks)}] {name}: error: {outcome['error']}{eta}", flush=True)
                continue
            if name in restored:  # a kept baseline, now in this DVC cache
                print(f"[{done}/{len(tasks)}] {kept_baseline_line(name, outcome, results / name)}{eta}", flush=True)
                continue
            keep(results / name, outcome["files"])
            print(f"[{done}/{len(tasks)}] {name} on worker {outcome['worker']} -> {results / name}{eta}", flush=True)
    return failed
