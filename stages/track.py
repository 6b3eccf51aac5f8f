"""Stage `track`: record this scenario's result as one MLflow run (params, metrics, figures, the encoder as a
PyTorch model, the dataset as an input), and each baseline of its dataset and seed as a run of its own.

It runs after `probe` and only when a result changed, so a cached re-run adds no run (and a baseline
already recorded by another scenario is found, not added again). If MLflow fails (store unreadable,
server down) it says so in one line and exits non-zero: every DVC output of the earlier stages is
already stored, and the next `dvc repro` retries only this stage.
"""

import argparse
import csv
import os
from pathlib import Path

import torch
import yaml

from contrastlab.infra import params
from contrastlab.infra.errors import TrackingError
from contrastlab.infra.files import one_line, project_root, read_json, read_metrics, stamp_seconds
from contrastlab.infra.stage import run_stage
from contrastlab.infra.tracking import (
    DatasetRef,
    RunRecord,
    describe,
    git_commit,
    open_store,
    probe_metrics,
    run_identity,
    tracking_uri,
    warnings_tag,
)
from contrastlab.pipeline.datasets import load_split
from contrastlab.pipeline.preprocess import normalize, to_unit
from contrastlab.study.names import BaselineRun, Scenario

READS = params.SCENARIO


def dvc_hash(lock: Path, path: Path) -> str | None:
    """DVC's hash of `path` as dvc.lock records it for the train stage that read it (None if not there)."""
    if not lock.exists():
        return None
    deps = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get("train", {}).get("deps", [])
    return next((dep.get("md5") for dep in deps if dep.get("path") == path.as_posix()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder the encoder trained on")
    parser.add_argument("--train-metrics", type=Path, required=True)
    parser.add_argument("--probe-metrics", type=Path, required=True)
    parser.add_argument("--examples-metrics", type=Path, required=True)
    parser.add_argument("--loss-csv", type=Path, required=True, help="per-epoch loss written by the train stage")
    parser.add_argument("--encoder", type=Path, required=True, help="logged as an MLflow PyTorch model")
    parser.add_argument("--artifacts", type=Path, nargs="+", required=True, help="figures to attach")
    parser.add_argument(
        "--baselines",
        type=Path,
        nargs="*",
        default=[],
        help="probe metrics of the baselines, each named <baseline>.json (their details beside them)",
    )
    args = parser.parse_args()
    p = params.load(READS)

    trained = read_metrics(args.train_metrics)
    with args.loss_csv.open() as f:
        epoch_losses = [float(row["loss"]) for row in csv.DictReader(f)]
    probed = read_metrics(args.probe_metrics)
    metrics = {
        **probe_metrics(probed),
        "false_negative_rate": read_json(args.examples_metrics)["false_negative_rate"],
        "final_loss": trained["final_loss"],
        "train_time_s": trained["train_time_s"],
        "images_per_s": trained["images_per_s"],
    }
    scenario = Scenario.of(p)
    experiment = os.environ.get("DVC_EXP_NAME")
    name, group = run_identity(scenario, experiment)
    commit = git_commit(Path.cwd())
    dataset = DatasetRef(
        p["dataset"],
        read_json(args.data / "meta.json")["digests"],
        dvc_hash(Path("dvc.lock"), args.data),
        p["split"]["validation_per_class"],
    )
    test_images = load_split(args.data, "test")[0][:4]
    # what the MLflow UI compares across (a run probed on held-out training images is not a test-set result)
    design = {
        "arch": p["model"]["arch"],
        "features": p["probe"]["features"],
        "probed_on": "validation" if p["split"]["validation_per_class"] else "test",
    }
    resolved = {"epochs": trained["epochs"], "lr": trained["lr"]}
    scenario_params = {**p, "resolved": resolved}
    records = [
        RunRecord(
            name=name,
            params=scenario_params,
            metrics=metrics,
            epoch_losses=epoch_losses,
            artifacts=args.artifacts,
            tags={
                "scenario": group,
                "dataset": p["dataset"],
                "loss": p["loss"],
                "aug": p["aug"],
                "seed": str(p["seed"]),
                **design,
                "dvc_experiment": experiment or "workspace",
                # where it trained: the device, and on a GPU its name, driver and CUDA (infra.machine.device_record)
                **{key: str(trained[key]) for key in ("device", "gpu", "gpu_driver", "cuda") if key in trained},
                **warnings_tag(trained, probed),
            },
            finished=finished_at(trained, args.train_metrics),
            duration_s=trained["train_time_s"],
            description=describe(p, resolved),
            source="stages/train.py",
            commit=commit,
            dataset=dataset,
            encoder=args.encoder,
            input_example=normalize(to_unit(torch.from_numpy(test_images))).numpy(),
        )
    ]
    baseline_params = params.validate(p, params.BASELINE)
    for path in args.baselines:
        baseline = BaselineRun(p["dataset"], path.stem, p["seed"])
        run_params = {"baseline": path.stem, **baseline_params}
        scored = read_metrics(path)
        records.append(
            RunRecord(
                name=baseline.name,
                params=run_params,
                metrics=probe_metrics(scored),
                tags={
                    "scenario": baseline.group,
                    "dataset": p["dataset"],
                    "baseline": path.stem,
                    "seed": str(p["seed"]),
                    **design,
                    **warnings_tag(scored),
                },
                finished=path.stat().st_mtime,
                description=describe(run_params),
                source="stages/baseline.py",
                commit=commit,
                dataset=dataset,
            )
        )
    root = project_root()
    record = records[0]
    try:
        with open_store(root) as store:  # opened once: one lock and one client for the scenario and its baselines
            for record in records:
                run_id, created = store.log(record)
                state = "logged new" if created else "already recorded as"
                print(f"MLflow: {state} run {run_id} ({record.name}) in {tracking_uri(root)}")
    except Exception as err:  # noqa: BLE001 - any tracking failure must be reported, not hidden
        # the store's own TrackingError already says what is wrong with it and what to do, in full
        reason = str(err) if isinstance(err, TrackingError) else one_line(f"{type(err).__name__}: {err}", 300)
        raise TrackingError(
            f"MLflow tracking failed for {record.name} (store {tracking_uri(root)}): {reason}. Every DVC "
            "output is intact: fix the store or start the server, then run `dvc repro` again (only `track` re-runs)"
        ) from None


def finished_at(trained: dict, path: Path) -> float:
    """When training ended: the train metrics' `finished` (in its details), or the file's time for one written before
    it had it."""
    return stamp_seconds(trained["finished"]) if "finished" in trained else path.stat().st_mtime


if __name__ == "__main__":
    run_stage(main)
