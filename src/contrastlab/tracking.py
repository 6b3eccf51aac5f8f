"""Record one scenario result as one MLflow run in the project's store.

The store is `sqlite:///<repo>/mlflow.db` with artifacts in `<repo>/mlruns`, where <repo> is
`DVC_ROOT` (set by DVC, and pointing at the main repository even when a queued experiment runs
in `.dvc/tmp/exps/...`). `MLFLOW_TRACKING_URI` overrides it, e.g. for a tracking server.

A run is keyed by a digest of the scenario's params and probe metrics: logging the same result
twice (a forced re-run of a deterministic scenario) finds the existing run instead of adding one.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

EXPERIMENT = "contrastlab"


def project_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def git_commit(cwd: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
    """Log one scenario result; return (run id, whether a new run was created)."""
    # A dead server should fail in seconds, not after MLflow's default minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifact_root = (root / "mlruns" / EXPERIMENT).as_uri() if uri.startswith("sqlite:") else None
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifact_root)
    else:
        experiment_id = experiment.experiment_id

    key = result_key(params, metrics)
    existing = client.search_runs([experiment_id], filter_string=f"tags.result_key = '{key}'", max_results=1)
    if existing:
        return existing[0].info.run_id, False

    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({**tags, "result_key": key})
        mlflow.log_params(flatten(params))
        mlflow.log_metrics(metrics)
        for epoch, value in enumerate(epoch_losses, start=1):
            mlflow.log_metric("train_loss", value, step=epoch)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id, True
