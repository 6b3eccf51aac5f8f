"""Stage `track`: record this scenario's result as one MLflow run (params, metrics, figures, encoder).

It runs after `probe` and only when a result changed, so a cached re-run adds no run. If MLflow
fails (store unreadable, server down) it says so in one line and exits non-zero: every DVC output
of the earlier stages is already stored, and the next `dvc repro` retries only this stage.
"""

import argparse
import csv
import os
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.stage import run_stage
from contrastlab.infra.files import one_line, read_json
from contrastlab.infra.errors import TrackingError
from contrastlab.infra.tracking import git_commit, log_scenario, project_root, run_identity, tracking_uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-metrics", type=Path, required=True)
    parser.add_argument("--probe-metrics", type=Path, required=True)
    parser.add_argument("--pairs-metrics", type=Path, required=True)
    parser.add_argument("--loss-csv", type=Path, required=True, help="per-epoch loss written by the train stage")
    parser.add_argument("--artifacts", type=Path, nargs="+", required=True, help="figures and encoder to attach")
    args = parser.parse_args()
    p = params.load_all()

    trained = read_json(args.train_metrics)
    probed = read_json(args.probe_metrics)
    paired = read_json(args.pairs_metrics)
    with args.loss_csv.open() as f:
        epoch_losses = [float(row["loss"]) for row in csv.DictReader(f)]
    metrics = {
        "probe_top1": probed["top1"],
        "probe_top3": probed["top3"],
        "knn_top1": probed["knn"],
        **{f"class_acc.{name}": acc for name, acc in probed["per_class"].items()},
        **{f"shift_top1.{name}": acc for name, acc in probed["shifted_top1"].items()},
        "false_negative_rate": paired["false_negative_rate"],
        "final_loss": trained["final_loss"],
        "train_time_s": trained["train_time_s"],
        "images_per_s": trained["images_per_s"],
    }
    experiment = os.environ.get("DVC_EXP_NAME")
    name, scenario = run_identity(params.scenario_name(p), p["seed"], experiment)
    tags = {
        "scenario": scenario,
        "dataset": p["dataset"],
        "loss": p["loss"],
        "aug": p["aug"],
        "seed": str(p["seed"]),
        "git_commit": git_commit(Path.cwd()),
        "dvc_experiment": experiment or "workspace",
    }
    logged = {**p, "resolved": {"epochs": trained["epochs"], "lr": trained["lr"]}}
    root = project_root()
    try:
        run_id, created = log_scenario(run_name=name, params=logged, metrics=metrics, epoch_losses=epoch_losses,
                                       artifacts=args.artifacts, tags=tags, root=root)
    except Exception as err:  # noqa: BLE001 - any tracking failure must be reported, not hidden
        reason = one_line(f"{type(err).__name__}: {err}", 300)
        raise TrackingError(
            f"MLflow tracking failed for {name} (store {tracking_uri(root)}): {reason}. Every DVC output is "
            "intact: fix the store or start the server, then run `dvc repro` again (only `track` re-runs)"
        ) from None
    state = "logged new" if created else "already recorded as"
    print(f"MLflow: {state} run {run_id} ({name}) in {tracking_uri(root)}")


if __name__ == "__main__":
    run_stage(main)
