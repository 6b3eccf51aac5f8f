"""Put the committed study results (`study/results/<name>/`) into the MLflow store as the runs the track
stage would have logged had they run here: the same names, tags, params, metrics (the loss per epoch as
steps), figures, dataset input and description, tagged `imported`, each study nested under one parent run.

    python -m contrastlab.study.import_runs --results study/results      # `make mlflow`

A run is keyed as the track stage keys it (params and deterministic metrics), so a second import adds
nothing and a result the study already logged here is recognised: it only gets its parent. Every folder is read
and checked whole before anything is logged (as the report reads it, and against MLflow's limits), so a damaged or
partial folder is named in one line and skipped alone; the rest is imported (the exit status is then 1).
The encoders are not in study/results (they are in the DVC experiments), so imported runs have no model.
"""

from __future__ import annotations

import argparse
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
from mlflow.utils.validation import (
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    path_not_unique,
    validate_param_and_metric_name,
)
from tqdm import tqdm

from contrastlab.infra import params as params_module
from contrastlab.infra import plots
from contrastlab.infra.errors import ParamError, TrackingError
from contrastlab.infra.files import one_line, stamp_seconds, write_csv
from contrastlab.infra.stage import run_stage
from contrastlab.infra.tracking import (
    DatasetRef,
    RunRecord,
    Store,
    describe,
    flatten,
    open_store,
    probe_metrics,
    runs_url,
    tracking_uri,
    warnings_tag,
)
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import OFFICIAL_DIGESTS
from contrastlab.study.names import PROTOCOL
from contrastlab.study.results import DamagedRun, group_name, read_runs
from contrastlab.study.runner import with_values


def recorded_params(study: dict, root: Path) -> dict:
    """The params a run used: study.json's own record, or (for runs made before it kept one) params.yaml of
    the commit it ran from with its overrides applied, or at least its overrides."""
    if "params" in study:
        return study["params"]
    commit = study.get("baseline_commit")
    shown = (
        subprocess.run(["git", "show", f"{commit}:params.yaml"], cwd=root, capture_output=True, text=True)
        if commit
        else None
    )
    if not shown or shown.returncode != 0:
        return {path: value for path, value in study.get("overrides", {}).items()}
    raw = with_values(yaml.safe_load(shown.stdout), study.get("overrides", {}))
    reads = params_module.BASELINE if "baseline" in study else params_module.SCENARIO
    try:
        return params_module.validate(raw, reads)
    except ParamError:  # an older schema: everything but the study's own section, unchecked
        return {key: value for key, value in raw.items() if key not in params_module.STUDY_ONLY}


def figures(run: dict, out: Path) -> list[Path]:
    """The stage figures of a scenario, drawn again from the CSVs its folder keeps (as `read_run` read them)."""
    study, tables = run["study"], run["tables"]
    classes = list(DATASETS[study["dataset"]].classes)
    name = study["name"]
    out.mkdir()
    plots.loss_curve(tables["train_loss.csv"]["loss"], f"training loss: {name}", out / "train_loss.png")
    coords = np.column_stack([tables["tsne.csv"]["x"], tables["tsne.csv"]["y"]])
    if coords.any():
        plots.tsne_scatter(coords, np.array(tables["tsne.csv"]["class"]), classes, f"t-SNE: {name}", out / "tsne.png")
    else:  # the tsne stage put collapsed features all at (0, 0), and drew this instead of a map
        plots.placeholder(
            "No t-SNE map: the features collapsed (every point at the origin; the run's warnings tag says more).",
            f"t-SNE: {name}",
            out / "tsne.png",
        )
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for actual, predicted in zip(tables["confusion.csv"]["actual"], tables["confusion.csv"]["predicted"], strict=True):
        matrix[actual, predicted] += 1
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


def record(run: dict, root: Path) -> RunRecord:
    """A results folder as `read_run` read it, as the run the track stage would have logged, but its figures
    (DamagedRun, or KeyError/ValueError where it lacks what only the import reads: train.json's lr, ...)."""
    folder, study, probe = run["folder"], run["study"], run["probe"]
    p = recorded_params(study, root)
    dataset, seed = study["dataset"], study["seed"]
    design = {
        "arch": p.get("model", {}).get("arch", "study"),
        "features": p.get("probe", {}).get("features", "embedding"),
        "probed_on": "validation" if p.get("split", {}).get("validation_per_class") else "test",
    }
    common = dict(
        finished=stamp_seconds(study["finished"]),
        commit=study.get("baseline_commit", "unknown"),
        dataset=DatasetRef(
            dataset, OFFICIAL_DIGESTS[dataset], validation_per_class=p.get("split", {}).get("validation_per_class", 0)
        ),
    )
    imported = {
        "imported": str(folder.relative_to(root) if folder.is_relative_to(root) else folder),
        "dvc_experiment": study["name"],
        "study": study_of(study),
    }
    if "baseline" in study:
        run_params = {"baseline": study["baseline"], **p}
        return RunRecord(
            name=study["name"],
            params=run_params,
            metrics=probe_metrics(probe),
            tags={
                "scenario": group_name(study),
                "dataset": dataset,
                "baseline": study["baseline"],
                "seed": str(seed),
                **design,
                **imported,
            },
            description=describe({**run_params, "dataset": dataset, "seed": seed}),
            source="stages/baseline.py",
            **common,
        )
    trained = run["train"]
    if "train_loss.csv" not in run["tables"]:
        raise DamagedRun("no train_loss.csv")
    resolved = {"epochs": trained["epochs"], "lr": trained["lr"]}
    metrics = {
        **probe_metrics(probe),
        "final_loss": trained["final_loss"],
        "train_time_s": trained["train_time_s"],
        "images_per_s": trained["images_per_s"],
    }
    if "examples" in run:  # the earliest runs kept no examples.json
        metrics["false_negative_rate"] = run["examples"]["false_negative_rate"]
    if "finished" in trained:
        common["finished"] = stamp_seconds(trained["finished"])
    return RunRecord(
        name=study["name"],
        params={**p, "resolved": resolved},
        metrics=metrics,
        epoch_losses=run["tables"]["train_loss.csv"]["loss"],
        tags={
            "scenario": group_name(study),
            "dataset": dataset,
            "loss": study["loss"],
            "aug": study["aug"],
            "seed": str(seed),
            **design,
            **imported,
            **warnings_tag(trained, probe),
        },
        duration_s=trained["train_time_s"],
        description=describe(
            {**p, "dataset": dataset, "loss": study["loss"], "aug": study["aug"], "seed": seed}, resolved
        ),
        source="stages/train.py",
        **common,
    )


def loggable(run: RunRecord) -> RunRecord:
    """`run`, or DamagedRun saying what of it MLflow would refuse or cut short (MLflow's limits: names of at most
    250 characters that resolve to no other path, param values of 6000, tag values of 8000); checked before
    anything is logged, as MLflow would otherwise stop the import at this folder, with the folders after it."""
    params = flatten(run.params)
    tags = {**run.tags, "mlflow.runName": run.name, "mlflow.note.content": run.description}
    for what, names in (("metric", [*run.metrics, "train_loss"]), ("param", params), ("tag", tags)):
        for name in names:
            shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
            if len(name) > MAX_ENTITY_KEY_LENGTH:
                raise DamagedRun(
                    f"{what} name {shown} ({len(name)} characters) is longer than MLflow's {MAX_ENTITY_KEY_LENGTH}"
                )
            if not validate_param_and_metric_name(name) or path_not_unique(name):
                raise DamagedRun(
                    f"{what} name {shown} is not one MLflow takes (letters, digits and _ - . : / and "
                    "spaces, never resolving to another path)"
                )
    for what, values, limit in (("param", params, MAX_PARAM_VAL_LENGTH), ("tag", tags, MAX_TAG_VAL_LENGTH)):
        for name, value in values.items():
            if len(str(value)) > limit:
                raise DamagedRun(f"{what} {name} is {len(str(value))} characters long, more than MLflow's {limit}")
    return run


def parent(store: Store, name: str, children: list[RunRecord], scratch: Path) -> str:
    """The study's parent run (found by its name, made on first import), its summary table refreshed."""
    rows = defaultdict(list)
    for child in children:
        rows[(child.tags["dataset"], child.tags["scenario"])].append(child.metrics["probe_top1"])
    summary = scratch / f"summary-{len(list(scratch.glob('summary-*')))}" / "summary.csv"
    summary.parent.mkdir()
    write_csv(
        summary,
        ["dataset", "scenario", "seeds", "top1_mean", "top1_std"],
        (
            [dataset, scenario, len(v), f"{np.mean(v):.4f}", f"{np.std(v, ddof=1) if len(v) > 1 else 0:.4f}"]
            for (dataset, scenario), v in sorted(rows.items())
        ),
    )
    finished = max(child.finished for child in children)
    started = min(child.finished - child.duration_s for child in children)
    datasets = sorted({child.tags["dataset"] for child in children})
    run = RunRecord(
        name=name,
        params={"study": name},
        metrics={},
        tags={"study": name, "imported": "study/results"},
        finished=finished,
        duration_s=finished - started,
        description=f"**{name}**: {len(rows)} scenarios on {', '.join(datasets)}, nested below "
        "(summary.csv: their mean probe top-1 over seeds).",
    )
    run_id, _ = store.log(run)
    store.client.log_artifact(run_id, str(summary))
    return run_id


def import_results(results: Path, root: Path) -> tuple[int, int, list[str]]:
    """(runs added, runs already in the store, "<folder>: <what is wrong>" per refused folder). Every folder is
    checked whole (`read_runs`, `record`, `loggable`) before the store is opened. Figures are drawn only for the runs
    that are new, in parallel: they are most of the import's time."""
    runs, refused = read_runs(results)
    runs.sort(key=lambda run: run["folder"].name)
    records = {}
    for run in runs:
        try:
            records[run["folder"]] = loggable(record(run, root))
        except DamagedRun as err:
            refused.append(f"{run['folder']}: {err}")
        except (KeyError, ValueError, TypeError) as err:
            refused.append(f"{run['folder']}: damaged ({type(err).__name__}: {one_line(err, 120)})")
    with tempfile.TemporaryDirectory() as tmp, open_store(root) as store:
        scratch = Path(tmp)
        drawn = [
            run
            for run in runs
            if run["folder"] in records
            and "loss" in records[run["folder"]].tags
            and not store.find(records[run["folder"]].key)
        ]
        with ProcessPoolExecutor() as pool:
            figures_of = pool.map(figures, drawn, [scratch / run["folder"].name for run in drawn])
            for run, paths in tqdm(
                zip(drawn, figures_of, strict=True),
                total=len(drawn),
                desc="drawing figures",
                unit="run",
                file=sys.stdout,
            ):
                records[run["folder"]].artifacts = paths
        by_study: defaultdict[str, list[RunRecord]] = defaultdict(list)
        for run_record in records.values():
            by_study[run_record.tags["study"]].append(run_record)
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
    return added, known, sorted(refused)


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
    print(
        f"MLflow: {added} runs imported, {known} already there, {len(refused)} folders refused, in "
        f"{time.perf_counter() - start:.0f} s -> {tracking_uri(root)}"
    )
    if refused:
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
