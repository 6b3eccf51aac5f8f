"""Record one scenario result as one MLflow run in the project's store.

The store is `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlruns`, where <repo> is
`DVC_ROOT` (set by DVC, and pointing at the main repository even when a queued experiment runs
in `.dvc/tmp/exps/...`). `MLFLOW_TRACKING_URI` overrides it, e.g. for a tracking server.

A run is keyed by a digest of the scenario's params and probe metrics: logging the same result
twice (a forced re-run of a deterministic scenario) finds the existing run instead of adding one.
A new param in params.yaml changes every digest, so the next result of each scenario is a new run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from pathlib import Path

from contrastlab.study.names import Scenario

EXPERIMENT = "contrastlab"



def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


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
            scenario.dataset, scenario.loss, scenario.aug, scenario.seed):
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


def probe_metrics(summary: dict) -> dict[str, float]:
    """A probe's results file as MLflow metrics: the same names for a scenario and for a baseline."""
    return {
        "probe_top1": summary["top1"],
        "probe_top3": summary["top3"],
        "knn_top1": summary["knn"],
        **{f"class_acc.{name}": acc for name, acc in summary.get("per_class", {}).items()},
        **{f"shift_top1.{name}": acc for name, acc in summary.get("shifted_top1", {}).items()},
    }


def result_key(params: dict, metrics: dict) -> str:
    blob = json.dumps({"params": params, "metrics": metrics}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def log_scenario(
    *,
    run_name: str,
    params: dict,
    metrics: dict,
    epoch_losses: list[float],
    artifacts: list[Path],
    tags: dict[str, str],
    root: Path,
) -> tuple[str, bool]:
    """Log one scenario result; return (run id, whether a new run was created).

    Safe with several writers at once (`dvc queue start -j N`, or machines sharing a server): the
    local sqlite store is written by one process at a time (a lock file beside it), and a run is
    marked complete (its `result_key` tag) only after everything is logged; a run that failed half
    way is deleted, so the dedupe never finds an incomplete run.
    """
    # A dead server should fail in seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow
    from filelock import FileLock

    uri = tracking_uri(root)
    local_db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    with FileLock(f"{local_db}.lock") if local_db else contextlib.nullcontext():
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        experiment_id = _experiment_id(client, root, uri)
        key = result_key(params, metrics)
        existing = client.search_runs([experiment_id], filter_string=f"tags.result_key = '{key}'", max_results=1)
        if existing:
            return existing[0].info.run_id, False

        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            with mlflow.start_run(run_id=run_id):
                mlflow.log_params(flatten(params))
                mlflow.log_metrics(metrics)
                for epoch, value in enumerate(epoch_losses, start=1):
                    mlflow.log_metric("train_loss", value, step=epoch)
                for path in artifacts:
                    mlflow.log_artifact(str(path))
                mlflow.set_tag("result_key", key)
        except BaseException:
            with contextlib.suppress(Exception):
                client.delete_run(run_id)
            raise
        return run_id, True


def _experiment_id(client, root: Path, uri: str) -> str:
    """The project's experiment, created on first use (another writer may create it at the same moment)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = (root / "mlruns" / EXPERIMENT).as_uri() if uri.startswith("sqlite:") else None
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    except MlflowException:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            raise
        return experiment.experiment_id
