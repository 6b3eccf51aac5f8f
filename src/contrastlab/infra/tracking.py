"""Record results as MLflow runs in the project's store, with MLflow's own lineage fields.

The store is `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlruns`, where <repo> is
`DVC_ROOT` (set by DVC, and pointing at the main repository even when a queued experiment runs
in `.dvc/tmp/exps/...`). `MLFLOW_TRACKING_URI` overrides it, e.g. for a tracking server.

A run is keyed by a digest of its params and its deterministic metrics (not the training time or
speed, which differ between two runs of one result): logging the same result twice (a forced re-run,
a retrain after a failure, the import of a result already logged by the stage) finds the existing
run instead of adding one. A new param in params.yaml changes every digest, so the next result of
each scenario is a new run.

Where MLflow has a field for something, the run uses it rather than a tag of ours: the run's start
and end are the training's (so Duration is the training time), `mlflow.source.*` name the code and
its git commit, the dataset is a dataset input with a content digest, the encoder a logged PyTorch
model, the settings the run's description, and a study's runs are nested under one parent run.

Opening the store for writing repairs what a crash or a move leaves: a new local store is created beside
its final name and renamed into place when complete, runs an interrupted writer left half-logged are
removed, and a copied or moved repository's store is pointed at its own `mlruns/`. A store that another
process holds is waited for, a bounded time, and one that MLflow cannot use is one line saying what to do.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from contrastlab.infra.errors import TrackingError
from contrastlab.infra.files import one_line
from contrastlab.study.names import Scenario

EXPERIMENT = "contrastlab"
# MLflow 3's experiment kind for model training (the "Model training" side, not GenAI). MLflow 3.17's open-source
# UI ignores it (its workflow toggle is always on: the side comes from the address's `workflowType`, else the
# last one chosen in the sidebar, else GenAI), so links to the runs add `?workflowType=machine_learning`.
EXPERIMENT_KIND = "custom_model_development"
TIMING_METRICS = ("train_time_s", "images_per_s")  # differ between two runs of one result: not in its key
WAIT_ENV, WAIT_S = "CONTRASTLAB_MLFLOW_WAIT", 300.0  # how long to wait for a store another process holds
# Where the local store keeps absolute artifact addresses (MLflow has no API to change them).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)
# The loggers of MLflow's store and of the libraries under it, silenced while the store is open (`quiet_store`).
STORE_LOGGERS = ("mlflow.store", "alembic", "sqlalchemy")


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def runs_url(server: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at `server` (its hash router, model-training side)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def git_commit(cwd: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_identity(scenario: Scenario, experiment: str | None) -> tuple[str, str]:
    """(run name, `scenario` tag) for a result of `scenario` (its dataset, loss, aug and seed).

    The study names each experiment after its scenario (`contrastlab.study.names`); that name becomes
    the run's, and its group (the name without the seed) the `scenario` tag, so that grouping by the
    tag averages seeds of one variant and recipe only. An experiment DVC named itself (`dusty-hops`)
    is appended to the scenario to tell it from the workspace's run; the workspace's run is just the
    scenario.
    """
    named = Scenario.parse(experiment) if experiment else None
    if named is not None and (named.dataset, named.loss, named.aug, named.seed) == (
        scenario.dataset,
        scenario.loss,
        scenario.aug,
        scenario.seed,
    ):
        return named.name, named.group
    if not experiment or experiment == scenario.group:
        return scenario.group, scenario.group
    return f"{scenario.group} ({experiment})", scenario.group


def flatten(params: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}, the names `dvc exp run -S` uses."""
    flat: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


PROBE_METRIC_PREFIXES = ("probe_", "knn_", "class_acc.", "shift_top1.")  # probe_metrics' names: scored on test images


def probe_metrics(summary: dict) -> dict[str, float]:
    """A probe's results file as MLflow metrics: the same names for a scenario and for a baseline."""
    return {
        "probe_top1": summary["top1"],
        "probe_top3": summary["top3"],
        "knn_top1": summary["knn"],
        **{f"class_acc.{name}": acc for name, acc in summary.get("per_class", {}).items()},
        **{f"shift_top1.{name}": acc for name, acc in summary.get("shifted_top1", {}).items()},
    }


def warnings_tag(*results: dict) -> dict[str, str]:
    """{"warnings": the results' warnings joined by "; "} (a collapsed encoder, ...), or {} when there are none.
    A tag, not a param or metric: it never changes the result's key."""
    warnings = [warning for result in results for warning in result.get("warnings", [])]
    return {"warnings": "; ".join(warnings)} if warnings else {}


def result_key(params: dict, metrics: dict) -> str:
    """What identifies one result: its params and its metrics, without the timings."""
    deterministic = {name: value for name, value in metrics.items() if name not in TIMING_METRICS}
    blob = json.dumps({"params": params, "metrics": deterministic}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def describe(params: dict, resolved: dict | None = None) -> str:
    """The run's description (Markdown): what was trained and how it was probed, in one paragraph."""
    if "baseline" in params:
        head = f"**{params['dataset']}**, baseline `{params['baseline']}`, seed {params['seed']}"
    else:
        head = f"**{params['dataset']} / {params['loss']} / {params['aug']}**, seed {params['seed']}"
    model, probe, train = params.get("model", {}), params.get("probe", {}), params.get("train", {})
    parts = [head]
    if model:
        parts.append(f"encoder `{model['arch']}` ({model['embedding_dim']}-d embedding)")
    if probe:
        held_out = params.get("split", {}).get("validation_per_class")
        on = f"{held_out} held-out training images per class" if held_out else "the test set"
        parts.append(f"linear probe of the {probe.get('features', 'embedding')} on {on}")
    if resolved and "optimizer" in train:
        parts.append(
            f"trained {resolved['epochs']} epochs at lr {resolved['lr']} ({train['optimizer']}, "
            f"{train['schedule']}, batch {train['batch_size']}, {train['head']} head, {train['precision']})"
        )
    return "; ".join(parts) + "."


def dataset_digest(content_digests: dict) -> str:
    """One digest of a dataset's content (the sha256 of each array, which the download stage verifies),
    short enough for MLflow (at most 36 characters): the same data gives the same digest whatever its source."""
    return hashlib.sha256(json.dumps(content_digests, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class DatasetRef:
    """The data of a run as MLflow's dataset inputs: what it trained on (name, content digest, and DVC's hash of
    the folder when known: it also depends on where the files came from, which `meta.json` records) and what its
    probe scored, the `evaluation` input its probe metrics name: the test split, or the training images held out
    (`validation_per_class` of each class)."""

    name: str
    content_digests: dict
    dvc_md5: str | None = None
    validation_per_class: int = 0

    @property
    def evaluation(self) -> tuple[str, str]:
        """(name, digest) of the images the probe scored."""
        if self.validation_per_class:
            held_out = {"train": self.content_digests["train"], "validation_per_class": self.validation_per_class}
            return f"{self.name}-validation", dataset_digest(held_out)
        return f"{self.name}-test", dataset_digest({"test": self.content_digests["test"]})

    def as_inputs(self) -> list:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        name, digest = self.evaluation
        scored = Dataset(
            name=name,
            digest=digest,
            source_type="local",
            source=json.dumps({"uri": f"data/datasets/{self.name}"}),
            profile=json.dumps({}),
        )
        return [self._training_input(), DatasetInput(scored, [InputTag("mlflow.data.context", "evaluation")])]

    def _training_input(self):
        from mlflow.entities import Dataset, DatasetInput, InputTag

        profile = {"content_sha256": self.content_digests, "dvc_md5": self.dvc_md5}
        dataset = Dataset(
            name=self.name,
            digest=dataset_digest(self.content_digests),
            source_type="local",
            source=json.dumps({"uri": f"data/datasets/{self.name}"}),
            profile=json.dumps(profile),
        )
        tags = [InputTag("mlflow.data.context", "training")]
        if self.dvc_md5:
            tags.append(InputTag("dvc_md5", self.dvc_md5))
        return DatasetInput(dataset, tags)


@dataclass
class RunRecord:
    """Everything MLflow keeps of one result, from the track stage or from a committed results folder."""

    name: str
    params: dict
    metrics: dict[str, float]
    tags: dict[str, str]
    finished: float  # when training ended (Unix seconds); the run spans `duration_s` before it
    duration_s: float = 0.0
    description: str = ""
    source: str = "dvc.yaml"
    commit: str = "unknown"
    epoch_losses: list[float] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    dataset: DatasetRef | None = None
    encoder: Path | None = None  # an encoder file of `contrastlab.methods.encoders`, logged as a PyTorch model
    input_example: np.ndarray | None = None  # a few encoder inputs, float32 (N, C, H, W): the model's signature
    parent_id: str | None = None

    @property
    def key(self) -> str:
        return result_key(self.params, self.metrics)


class Store:
    """The project's MLflow experiment, opened by `open_store`: find a result's run or add one."""

    def __init__(self, client, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id

    def find(self, key: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.result_key = '{key}'", max_results=1)
        return runs[0].info.run_id if runs else None

    def log(self, record: RunRecord) -> tuple[str, bool]:
        """(run id, whether it is new): the run already holding this result, or a new complete one."""
        existing = self.find(record.key)
        if existing:
            return existing, False
        return self._add(record), True

    def remove_incomplete(self, exclusive: bool) -> None:
        """Delete the runs a killed writer left: RUNNING without `result_key`, as `_add` never got to complete or
        delete them. With `exclusive` (the local store's lock is held, so no other writer is active) every such run
        is one; on a shared server only a run whose `writer` is a process of this host that no longer exists."""
        runs = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'")
        left = [
            run
            for run in runs
            if "result_key" not in run.data.tags and (exclusive or writer_gone(run.data.tags.get("writer", "")))
        ]
        for run in left:
            self.client.delete_run(run.info.run_id)
        if left:
            names = ", ".join(f"{run.info.run_name} {run.info.run_id}" for run in left)
            print(
                f"MLflow: removed {len(left)} incomplete run{'s' * (len(left) > 1)} left by an interrupted track "
                f"stage or import ({names})"
            )

    def _add(self, record: RunRecord) -> str:
        """A run is marked complete (its `result_key` tag) only after everything is logged; a run that
        failed half way is deleted, so `find` never returns an incomplete run."""
        from mlflow.entities import Metric, Param

        start_ms = int((record.finished - record.duration_s) * 1000)
        end_ms = int(record.finished * 1000)
        tags = {
            **record.tags,
            "mlflow.user": getpass.getuser(),
            "mlflow.source.type": "LOCAL",
            "mlflow.source.name": record.source,
            "mlflow.source.git.commit": record.commit,
            "mlflow.note.content": record.description,
        }
        if record.parent_id:
            tags["mlflow.parentRunId"] = record.parent_id
        tags["writer"] = f"{socket.gethostname()}:{os.getpid()}"  # tells a server's orphans: remove_incomplete
        run_id = self.client.create_run(
            self.experiment_id, start_time=start_ms, tags=tags, run_name=record.name
        ).info.run_id
        try:
            params = [Param(name, str(value)) for name, value in flatten(record.params).items()]
            self.client.log_batch(run_id, params=params)
            if record.dataset:
                self.client.log_inputs(run_id, datasets=record.dataset.as_inputs())
            for path in record.artifacts:
                self.client.log_artifact(run_id, str(path))
            # the probe's metrics name the encoder they score and the images they were scored on, so MLflow's
            # Models view ranks the logged encoders by them
            model_id = self._log_encoder(run_id, record) if record.encoder else None
            name, digest = record.dataset.evaluation if record.dataset else (None, None)
            probe = {"model_id": model_id, "dataset_name": name, "dataset_digest": digest}
            n = len(record.epoch_losses)
            metrics = [
                Metric(key, value, end_ms, 0, **(probe if key.startswith(PROBE_METRIC_PREFIXES) else {}))
                for key, value in record.metrics.items()
            ]
            metrics += [
                Metric("train_loss", value, start_ms + (end_ms - start_ms) * epoch // n, epoch)
                for epoch, value in enumerate(record.epoch_losses, start=1)
            ]
            self.client.log_batch(run_id, metrics=metrics)
            self.client.set_tag(run_id, "result_key", record.key)
            self.client.set_terminated(run_id, "FINISHED", end_time=end_ms)
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.delete_run(run_id)
            raise
        return run_id

    def _log_encoder(self, run_id: str, record: RunRecord) -> str:
        """The encoder as an MLflow PyTorch model (torch.export's format: loading it needs no class of ours),
        its signature from `record.input_example` with a free batch size; `mlflow.pytorch.load_model` reads it.
        Returns the logged model's id."""
        import mlflow
        import torch

        from contrastlab.methods.encoders import load_encoder

        assert record.encoder is not None  # `log` calls this only for a record with an encoder
        encoder = load_encoder(record.encoder, torch.device("cpu")).eval()
        mlflow.set_experiment(experiment_id=self.experiment_id)  # where MLflow puts the logged model
        return mlflow.pytorch.log_model(
            encoder,
            name="encoder",
            input_example=record.input_example,
            run_id=run_id,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        ).model_id


def writer_gone(writer: str) -> bool:
    """Whether a run's `writer` ("<host>:<pid>") is a process of this host that has ended (elsewhere: unknown)."""
    host, _, pid = writer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        pass
    return False


@contextlib.contextmanager
def open_store(root: Path) -> Iterator[Store]:
    """The project's experiment, held by this process alone while open when the store is the local sqlite
    file (a lock beside it), so several writers at once (`dvc queue start -j N`) each log complete runs."""
    # A dead server should fail in seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow

    uri = tracking_uri(root)
    local_db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    with quiet_store(), writer_lock(local_db) if local_db else contextlib.nullcontext():
        if local_db:
            prepare_local(local_db, uri, root)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        store = Store(client, project_experiment(client, root, uri))
        store.remove_incomplete(exclusive=local_db is not None)
        yield store


@contextlib.contextmanager
def quiet_store() -> Iterator[None]:
    """Silence `STORE_LOGGERS`: MLflow logs a failed store operation as a ~30-line SQLAlchemy traceback before it
    raises it (and a new store's migrations as INFO lines), while the exception itself reaches the caller, which says
    it in one line (the track stage: `error: MLflow tracking failed ...`)."""
    loggers = [logging.getLogger(name) for name in STORE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def writer_lock(db: Path) -> Iterator[None]:
    """The lock beside the local store `db` that makes this process its only writer."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{db}.lock")

    def take(seconds: float) -> bool:
        try:
            lock.acquire(timeout=seconds)
        except Timeout:
            return False
        return True

    wait_for(db, Path(lock.lock_file), take)
    try:
        yield
    finally:
        lock.release()


def prepare_local(db: Path, uri: str, root: Path) -> None:
    """Make the local store `db` one MLflow can write, under its lock: created whole, or checked, and for the
    project's own store (not a `MLFLOW_TRACKING_URI`) pointed at this repository's `mlruns/`."""
    artifact_root = (root / "mlruns").as_uri()
    if not db.exists() or db.stat().st_size == 0:  # an empty file is what opening a missing one leaves
        create_store(db, artifact_root)
    else:
        check_store(db, uri, artifact_root)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        relocate(db, artifact_root)


def create_store(db: Path, artifact_root: str) -> None:
    """Create the store at `<db>.partial` and rename it into place once MLflow has made and migrated every table:
    that takes seconds, and a store killed half way through fails forever ("duplicate column name: step")."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    partial = db.with_name(f"{db.name}.partial")
    # a creation killed before left these; sqlite would replay an old journal into the new file
    leftovers = (partial, partial.with_name(f"{partial.name}-journal"))
    try:
        for path in leftovers:
            path.unlink(missing_ok=True)
        SqlAlchemyStore(f"sqlite:///{partial}", artifact_root).engine.dispose()
        os.replace(partial, db)
    finally:
        for path in leftovers:
            path.unlink(missing_ok=True)


def check_store(db: Path, uri: str, artifact_root: str) -> None:
    """Wait until no other process holds `db`, then let MLflow open it (it checks and migrates the schema): a
    file it cannot use (not a database, half made, another schema) is one line saying how to start afresh."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sqlalchemy.exc import SQLAlchemyError

    try:
        wait_for(db, db, lambda seconds: writable(db, seconds))
        SqlAlchemyStore(uri, artifact_root)
    except (sqlite3.DatabaseError, SQLAlchemyError, MlflowException) as err:
        if isinstance(err, sqlite3.OperationalError) or "database is locked" in str(err):
            raise  # a file sqlite cannot open, or a lock taken since: not the store's content
        raise TrackingError(
            f"{db} is not a complete MLflow store ({one_line(getattr(err, 'orig', None) or err, 120)}): move it aside "
            f"(`mv {db} {db}.broken`); the next run makes a new one, and `make mlflow` re-imports the committed study"
        ) from None


def writable(db: Path, seconds: float) -> bool:
    """Whether a write transaction on `db` can start within `seconds`: not while another process holds one
    (sqlite then says "database is locked")."""
    connection = sqlite3.connect(db, timeout=seconds, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as err:
        if err.sqlite_errorname != "SQLITE_BUSY":
            raise
        return False
    finally:
        connection.close()
    return True


def wait_for(db: Path, held: Path, take: Callable[[float], bool]) -> None:
    """`take(seconds)`: take a lock on `held` (the store `db` or its lock file), waiting at most that long. At once,
    or else after saying who holds it, within `$CONTRASTLAB_MLFLOW_WAIT` seconds; then one line saying what to do."""
    if take(0):
        return
    seconds = float(os.environ.get(WAIT_ENV, WAIT_S))
    print(f"MLflow: {db.name} is in use by {lock_holders(held)}; waiting up to {seconds:g} s", flush=True)
    if not take(seconds):
        raise TrackingError(
            f"{db} is still in use by {lock_holders(held)} after {seconds:g} s: let it finish or end "
            f"it ({WAIT_ENV}=<seconds> waits longer)"
        )


def lock_holders(path: Path) -> str:
    """The other processes that have `path` open, for a message: a lock's holder among them, as sqlite and filelock
    keep the locked file open while they hold it (no portable call names the holder of a lock itself)."""
    target = os.path.realpath(path)
    holders = [
        process.info
        for process in psutil.process_iter(["pid", "cmdline", "open_files"])  # in pid order
        if process.info["pid"] != os.getpid()  # the process that waits has it open too
        and target in {file.path for file in process.info["open_files"] or ()}
    ]  # None: another user's
    return (
        ", ".join(
            f"pid {info['pid']} ({one_line(' '.join(info['cmdline'] or ['command hidden']), 100)})" for info in holders
        )
        or "another process"
    )


def relocate(db: Path, artifact_root: str) -> None:
    """Point a copied or moved repository's store at its own `mlruns/`: MLflow records absolute artifact addresses,
    so the copy would keep writing into the original's. Rewritten in the sqlite file (under the store's lock), as
    MLflow has no API to change where an experiment or run keeps its artifacts."""
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        found = connection.execute("SELECT artifact_location FROM experiments WHERE name = ?", (EXPERIMENT,)).fetchone()
        location = found[0] if found else ""
        if "/mlruns/" not in location or location.startswith(f"{artifact_root}/"):
            return
        old = location[: location.rindex("/mlruns/") + len("/mlruns")]
        prefix = f"{old}/"
        for table, column in ARTIFACT_COLUMNS:
            rewrite = f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?"
            connection.execute(rewrite, (f"{artifact_root}/", len(prefix) + 1, len(prefix), prefix))
    print(f"MLflow: this repository was moved or copied; {db.name} now keeps artifacts in {artifact_root}, not {old}")


def project_experiment(client, root: Path, uri: str) -> str:
    """The project's experiment, created on first use as a model-training experiment (another writer may
    create it at the same moment)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND:  # a store made before the kind was set
            client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
        return experiment.experiment_id
    artifact_root = (root / "mlruns" / EXPERIMENT).as_uri() if uri.startswith("sqlite:") else None
    tags = {
        "mlflow.experimentKind": EXPERIMENT_KIND,
        "mlflow.note.content": "Contrastive representation learning: one run per scenario result and baseline "
        "(contrastlab). Compare runs by the `scenario`, `dataset`, `loss` and `aug` tags.",
    }
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=artifact_root, tags=tags)
    except MlflowException:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise
        return experiment.experiment_id
