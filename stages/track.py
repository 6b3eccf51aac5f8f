"""Stage `track`: record this scenario's result as one MLflow run (params, metrics, figures, encoder),
and each baseline of its dataset and seed as a run of its own.

It runs after `probe` and only when a result changed, so a cached re-run adds no run (and a baseline
already recorded by another scenario is found, not added again). If MLflow fails (store unreadable,
server down) it says so in one line and exits non-zero: every DVC output of the earlier stages is
already stored, and the next `dvc repro` retries only this stage.
"""

import argparse
import csv
import os
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.errors import TrackingError
from contrastlab.infra.files import one_line, project_root, read_json
from contrastlab.infra.stage import run_stage
from contrastlab.infra.tracking import git_commit, log_scenario, probe_metrics, run_identity, tracking_uri
from contrastlab.study.names import BaselineRun, Scenario

READS = params.SCENARIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-metrics", type=Path, required=True)
    parser.add_argument("--probe-metrics", type=Path, required=True)
    parser.add_argument("--examples-metrics", type=Path, required=True)
    parser.add_argument("--loss-csv", type=Path, required=True, help="per-epoch loss written by the train stage")
    parser.add_argument("--artifacts", type=Path, nargs="+", required=True, help="figures and encoder to attach")
    parser.add_argument("--baselines", type=Path, nargs="*", default=[],
                        help="probe metrics of the baselines, each named <baseline>.json")
    args = parser.parse_args()
    p = params.load(READS)

    trained = read_json(args.train_metrics)
    with args.loss_csv.open() as f:
        epoch_losses = [float(row["loss"]) for row in csv.DictReader(f)]
    metrics = {
        **probe_metrics(read_json(args.probe_metrics)),
        "false_negative_rate": read_json(args.examples_metrics)["false_negative_rate"],
        "final_loss": trained["final_loss"],
        "train_time_s": trained["train_time_s"],
        "images_per_s": trained["images_per_s"],
    }
    scenario = Scenario.of(p)
    experiment = os.environ.get("DVC_EXP_NAME")
    name, group = run_identity(scenario, experiment)
    commit = git_commit(Path.cwd())
    # what the MLflow UI compares across (a run probed on held-out training images is not a test-set result)
    design = {"arch": p["model"]["arch"], "features": p["probe"]["features"],
              "probed_on": "validation" if p["split"]["validation_per_class"] else "test"}
    tags = {"scenario": group, "dataset": p["dataset"], "loss": p["loss"], "aug": p["aug"], "seed": str(p["seed"]),
            **design, "git_commit": commit, "dvc_experiment": experiment or "workspace"}
    runs = [dict(run_name=name, params={**p, "resolved": {"epochs": trained["epochs"], "lr": trained["lr"]}},
                 metrics=metrics, epoch_losses=epoch_losses, artifacts=args.artifacts, tags=tags)]
    baseline_params = params.validate(p, params.BASELINE)
    for path in args.baselines:
        baseline = BaselineRun(p["dataset"], path.stem, p["seed"])
        runs.append(dict(run_name=baseline.group, params={"baseline": path.stem, **baseline_params},
                         metrics=probe_metrics(read_json(path)), epoch_losses=[], artifacts=[],
                         tags={"scenario": baseline.group, "dataset": p["dataset"], "baseline": path.stem,
                               "seed": str(p["seed"]), **design, "git_commit": commit}))
    root = project_root()
    for run in runs:
        try:
            run_id, created = log_scenario(**run, root=root)
        except Exception as err:  # noqa: BLE001 - any tracking failure must be reported, not hidden
            reason = one_line(f"{type(err).__name__}: {err}", 300)
            raise TrackingError(
                f"MLflow tracking failed for {run['run_name']} (store {tracking_uri(root)}): {reason}. Every DVC "
                "output is intact: fix the store or start the server, then run `dvc repro` again (only `track` re-runs)"
            ) from None
        state = "logged new" if created else "already recorded as"
        print(f"MLflow: {state} run {run_id} ({run['run_name']}) in {tracking_uri(root)}")


if __name__ == "__main__":
    run_stage(main)
