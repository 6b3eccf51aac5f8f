"""Put the committed study results (`study/results/<name>/`) into the MLflow store as the runs the track
stage would have logged had they run here: the same names, tags, params, metrics (the loss per epoch as
steps), figures, dataset input and description, tagged `imported`, each study nested under one parent run.

    python -m contrastlab.study.import_runs --results study/results      # `make mlflow`

A run is keyed as the track stage keys it (params and deterministic metrics), so a second import adds
nothing and a result the study already logged here is recognised: it only gets its parent. A damaged or
partial folder is named in one line and skipped; the rest is imported (the exit status is then 1).
The encoders are not in study/results (they are in the DVC experiments), so imported runs have no model.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from mlflow.exceptions import MlflowException
from tqdm import tqdm

from contrastlab.infra import params as params_module
from contrastlab.infra import plots
from contrastlab.infra.errors import ParamError, TrackingError
from contrastlab.infra.files import one_line, stamp_seconds, write_csv
from contrastlab.infra.stage import run_stage
from contrastlab.infra.tracking import (DatasetRef, RunRecord, Store, describe, open_store, probe_metrics, runs_url,
                                        tracking_uri, warnings_tag)
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import OFFICIAL_DIGESTS
from contrastlab.study.names import PROTOCOL
from contrastlab.study.results import group_name
from contrastlab.study.runner import with_values


def recorded_params(study: dict, root: Path) -> dict:
    """The params a run used: study.json's own record, or (for runs made before it kept one) params.yaml of
    the commit it ran from with its overrides applied, or at least its overrides."""
    if "params" in study:
        return study["params"]
    commit = study.get("baseline_commit")
    shown = subprocess.run(["git", "show", f"{commit}:params.yaml"], cwd=root, capture_output=True, text=True) \
        if commit else None
    if not shown or shown.returncode != 0:
        return {path: value for path, value in study.get("overrides", {}).items()}
    raw = with_values(yaml.safe_load(shown.stdout), study.get("overrides", {}))
    reads = params_module.BASELINE if "baseline" in study else params_module.SCENARIO
    try:
        return params_module.validate(raw, reads)
    except ParamError:  # an older schema: everything but the study's own section, unchecked
        return {key: value for key, value in raw.items() if key not in params_module.STUDY_ONLY}


def read_rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def figures(folder: Path, out: Path) -> list[Path]:
    """The stage figures of a scenario, drawn again from the CSVs its folder keeps."""
    study = json.loads((folder / "study.json").read_text())
    classes = list(DATASETS[study["dataset"]].classes)
    index = {name: i for i, name in enumerate(classes)}
    name = study["name"]
    out.mkdir()
    losses = [float(row["loss"]) for row in read_rows(folder / "train_loss.csv")]
    plots.loss_curve(losses, f"training loss: {name}", out / "train_loss.png")
    points = read_rows(folder / "tsne.csv")
    coords = np.array([[float(row["x"]), float(row["y"])] for row in points])
    if coords.any():
        plots.tsne_scatter(coords, np.array([index[row["class"]] for row in points]), classes, f"t-SNE: {name}",
                           out / "tsne.png")
    else:  # the tsne stage put collapsed features all at (0, 0), and drew this instead of a map
        plots.placeholder("No t-SNE map: the features collapsed (every point at the origin; the run's warnings "
                          "tag says more).", f"t-SNE: {name}", out / "tsne.png")
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for row in read_rows(folder / "confusion.csv"):
        matrix[index[row["actual"]], index[row["predicted"]]] += 1
    plots.confusion_heatmap(matrix, classes, f"linear probe: {name}", out / "confusion.png")
    return [out / "tsne.png", out / "confusion.png", out / "train_loss.png"]


def study_of(study: dict) -> str:
    """The parent run a result is nested under: its recipe and the settings beyond dataset/loss/aug (the
    study's 12 scenarios of one grid and recipe side by side), or the baselines of one kind of features."""
    variant = study.get("variant", "")
    if "baseline" in study:
        return f"baselines{': ' + variant if variant else ''}"
    recipe = study.get("recipe", PROTOCOL)
    return f"study: {recipe} recipe{', ' + variant if variant else ''}"


def record(folder: Path, root: Path) -> RunRecord:
    """One results folder as the run the track stage would have logged, but its figures (KeyError/ValueError/OSError
    when damaged)."""
    study = json.loads((folder / "study.json").read_text())
    probe = json.loads((folder / "probe.json").read_text())
    p = recorded_params(study, root)
    dataset, seed = study["dataset"], study["seed"]
    design = {"arch": p.get("model", {}).get("arch", "study"),
              "features": p.get("probe", {}).get("features", "embedding"),
              "probed_on": "validation" if p.get("split", {}).get("validation_per_class") else "test"}
    common = dict(finished=stamp_seconds(study["finished"]), commit=study.get("baseline_commit", "unknown"),
                  dataset=DatasetRef(dataset, OFFICIAL_DIGESTS[dataset]))
    imported = {"imported": str(folder.relative_to(root) if folder.is_relative_to(root) else folder),
                "dvc_experiment": study["name"], "study": study_of(study)}
    if "baseline" in study:
        run_params = {"baseline": study["baseline"], **p}
        return RunRecord(name=study["name"], params=run_params, metrics=probe_metrics(probe),
                         tags={"scenario": group_name(study), "dataset": dataset, "baseline": study["baseline"],
                               "seed": str(seed), **design, **imported},
                         description=describe({**run_params, "dataset": dataset, "seed": seed}),
                         source="stages/baseline.py", **common)
    trained = json.loads((folder / "train.json").read_text())
    resolved = {"epochs": trained["epochs"], "lr": trained["lr"]}
    metrics = {**probe_metrics(probe), "final_loss": trained["final_loss"], "train_time_s": trained["train_time_s"],
               "images_per_s": trained["images_per_s"]}
    if (folder / "examples.json").exists():  # the earliest runs kept no examples.json
        metrics["false_negative_rate"] = json.loads((folder / "examples.json").read_text())["false_negative_rate"]
    if "finished" in trained:
        common["finished"] = stamp_seconds(trained["finished"])
    return RunRecord(name=study["name"], params={**p, "resolved": resolved}, metrics=metrics,
                     epoch_losses=[float(row["loss"]) for row in read_rows(folder / "train_loss.csv")],
                     tags={"scenario": group_name(study), "dataset": dataset, "loss": study["loss"], "aug": study["aug"],
                           "seed": str(seed), **design, **imported, **warnings_tag(trained, probe)},
                     duration_s=trained["train_time_s"],
                     description=describe({**p, "dataset": dataset, "loss": study["loss"], "aug": study["aug"],
                                           "seed": seed}, resolved),
                     source="stages/train.py", **common)


def parent(store: Store, name: str, children: list[RunRecord], scratch: Path) -> str:
    """The study's parent run (found by its name, made on first import), its summary table refreshed."""
    rows = defaultdict(list)
    for child in children:
        rows[(child.tags["dataset"], child.tags["scenario"])].append(child.metrics["probe_top1"])
    summary = scratch / f"summary-{len(list(scratch.glob('summary-*')))}" / "summary.csv"
    summary.parent.mkdir()
    write_csv(summary, ["dataset", "scenario", "seeds", "top1_mean", "top1_std"],
              ([dataset, scenario, len(v), f"{np.mean(v):.4f}", f"{np.std(v, ddof=1) if len(v) > 1 else 0:.4f}"]
               for (dataset, scenario), v in sorted(rows.items())))
    finished = max(child.finished for child in children)
    started = min(child.finished - child.duration_s for child in children)
    datasets = sorted({child.tags["dataset"] for child in children})
    run = RunRecord(name=name, params={"study": name}, metrics={}, tags={"study": name, "imported": "study/results"},
                    finished=finished, duration_s=finished - started,
                    description=f"**{name}**: {len(rows)} scenarios on {', '.join(datasets)}, nested below "
                                "(summary.csv: their mean probe top-1 over seeds).")
    run_id, _ = store.log(run)
    store.client.log_artifact(run_id, str(summary))
    return run_id


def import_results(results: Path, root: Path) -> tuple[int, int, list[str]]:
    """(runs added, runs already in the store, one line per refused folder). Figures are drawn only for the
    runs that are new, in parallel: they are most of the import's time."""
    refused, records = [], {}
    folders = sorted(path for path in results.iterdir() if path.is_dir())
    with tempfile.TemporaryDirectory() as tmp, open_store(root) as store:
        scratch = Path(tmp)
        for folder in folders:
            if folder.name.endswith(".partial"):
                refused.append(f"{folder}: a run still being written (or interrupted while written); skipped")
                continue
            try:
                records[folder] = record(folder, root)
                if "loss" in records[folder].tags and not store.find(records[folder].key):
                    for name in ("train_loss.csv", "tsne.csv", "confusion.csv"):
                        (folder / name).stat()  # a scenario without its figures' data is damaged, refused here
            except (OSError, ValueError, KeyError, TypeError) as err:
                records.pop(folder, None)
                refused.append(f"{folder}: damaged ({type(err).__name__}: {one_line(err, 120)}); skipped")
        drawn = [folder for folder, run in records.items() if "loss" in run.tags and not store.find(run.key)]
        with ProcessPoolExecutor() as pool:
            figures_of = pool.map(figures, drawn, [scratch / folder.name for folder in drawn])
            for folder, paths in tqdm(zip(drawn, figures_of), total=len(drawn), desc="drawing figures",
                                      unit="run", file=sys.stdout):
                records[folder].artifacts = paths
        by_study = defaultdict(list)
        for run in records.values():
            by_study[run.tags["study"]].append(run)
        added = known = 0
        for name, children in tqdm(sorted(by_study.items()), desc="logging", unit="study", file=sys.stdout):
            parent_id = parent(store, name, children, scratch)
            for child in children:
                child.parent_id = parent_id
                run_id, created = store.log(child)
                if not created and store.client.get_run(run_id).data.tags.get("mlflow.parentRunId") != parent_id:
                    store.client.set_tag(run_id, "mlflow.parentRunId", parent_id)  # logged by the stage here
                added, known = added + created, known + (not created)
        experiment_id = store.experiment_id
    print(f"runs table: {runs_url('http://127.0.0.1:5000', experiment_id)} (once the MLflow UI runs there)")
    return added, known, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("study/results"), help="one folder per finished run")
    args = parser.parse_args()
    root = Path.cwd().resolve()
    start = time.perf_counter()
    try:
        added, known, refused = import_results(args.results.resolve(), root)
    except MlflowException as err:  # a store or server MLflow cannot use: one line, as the track stage says it
        raise TrackingError(f"MLflow import failed (store {tracking_uri(root)}): {one_line(err, 300)}") from None
    for line in refused:
        print(f"refused: {line}", file=sys.stderr)
    print(f"MLflow: {added} runs imported, {known} already there, {len(refused)} folders refused, in "
          f"{time.perf_counter() - start:.0f} s -> {tracking_uri(root)}")
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
