import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest

from contrastlab.infra.files import stamp_seconds
from contrastlab.infra.tracking import dataset_digest, open_store, tracking_uri
from contrastlab.pipeline.download import OFFICIAL_DIGESTS
from contrastlab.study.import_runs import figures, import_results, record, recorded_params, study_of
from contrastlab.study.results import read_run
from project import committed_params, write_committed_params

PARAMS = {
    "dataset": "mnist",
    "loss": "triplet",
    "aug": "simclr",
    "seed": 0,
    "model": {"arch": "study", "embedding_dim": 32},
    "split": {"validation_per_class": 0},
    "probe": {"features": "embedding"},
    "train": {"optimizer": "sgd", "schedule": "constant", "batch_size": 1024, "head": "sigmoid", "precision": "fp32"},
}
PROBE = {"top1": 0.9, "top3": 0.99, "knn": 0.88, "per_class": {"0": 0.95}}


def write(folder, files):
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))


def scenario(results, name="mnist-triplet-simclr-s0", **study):
    write(
        results / name,
        {
            "study.json": {
                "name": name,
                "dataset": "mnist",
                "loss": "triplet",
                "aug": "simclr",
                "variant": "",
                "recipe": "protocol",
                "seed": 0,
                "params": PARAMS,
                "baseline_commit": "abc123",
                "finished": "2026-12-01T10:00:00+0000",
                **study,
            },
            "probe.json": PROBE,
            "train.json": {"epochs": 10, "lr": 0.15, "final_loss": 0.1, "train_time_s": 300.0, "images_per_s": 5000.0},
            "examples.json": {"false_negative_rate": 0.0},
            "train_loss.csv": "epoch,loss\n1,0.5\n2,0.25\n",
            "tsne.csv": "x,y,class\n0.0,1.0,0\n2.0,3.0,7\n",
            "confusion.csv": "actual,predicted\n0,0\n7,1\n",
        },
    )


def baseline(results, name="baseline-mnist-raw_pixels-s0"):
    write(
        results / name,
        {
            "study.json": {
                "name": name,
                "dataset": "mnist",
                "baseline": "raw_pixels",
                "seed": 0,
                "params": {k: PARAMS[k] for k in ("dataset", "seed", "model", "split", "probe")},
                "finished": "2026-12-01T09:00:00+0000",
            },
            "probe.json": PROBE,
        },
    )


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "study" / "results"
    scenario(folder)
    baseline(folder)
    return folder


def runs(root):
    client = mlflow.MlflowClient(tracking_uri(root))
    experiment = client.get_experiment_by_name("contrastlab")
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}, client


def test_each_folder_becomes_the_run_the_stage_would_have_logged_under_its_study(results, tmp_path):
    added, known, refused = import_results(results, tmp_path)
    assert (added, known, refused) == (2, 0, [])
    logged, client = runs(tmp_path)
    assert set(logged) == {
        "mnist-triplet-simclr-s0",
        "baseline-mnist-raw_pixels-s0",
        "study: protocol recipe",
        "baselines",
    }
    run = logged["mnist-triplet-simclr-s0"]
    assert run.data.metrics["probe_top1"] == 0.9 and run.data.params["resolved.epochs"] == "10"
    assert run.data.tags["scenario"] == "mnist-triplet-simclr" and run.data.tags["imported"] == (
        "study/results/mnist-triplet-simclr-s0"
    )
    assert run.data.tags["mlflow.parentRunId"] == logged["study: protocol recipe"].info.run_id
    assert logged["baseline-mnist-raw_pixels-s0"].data.tags["mlflow.parentRunId"] == logged["baselines"].info.run_id
    end = stamp_seconds("2026-12-01T10:00:00+0000") * 1000
    assert (run.info.start_time, run.info.end_time) == (end - 300_000, end)  # Duration: the training time
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")] == [
        (1, 0.5),
        (2, 0.25),
    ]
    assert run.inputs.dataset_inputs[0].dataset.digest == dataset_digest(OFFICIAL_DIGESTS["mnist"])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"tsne.png", "confusion.png", "train_loss.png"}
    parent = logged["study: protocol recipe"].info.run_id
    assert [a.path for a in client.list_artifacts(parent)] == ["summary.csv"]


def test_a_second_import_adds_nothing(results, tmp_path):
    import_results(results, tmp_path)
    assert import_results(results, tmp_path) == (0, 2, [])
    assert len(runs(tmp_path)[0]) == 4


def test_a_result_the_stage_already_logged_is_recognised_and_nested(results, tmp_path):
    run = record(read_run(results / "mnist-triplet-simclr-s0"), tmp_path)
    run.metrics["train_time_s"] = 123.0  # the stage's own run of the same result: only the timing differs
    with open_store(tmp_path) as store:
        stage_run, _ = store.log(run)
    assert import_results(results, tmp_path)[:2] == (1, 1)
    logged, _ = runs(tmp_path)
    assert logged["mnist-triplet-simclr-s0"].info.run_id == stage_run
    assert (
        logged["mnist-triplet-simclr-s0"].data.tags["mlflow.parentRunId"]
        == logged["study: protocol recipe"].info.run_id
    )


def test_damaged_and_partial_folders_are_refused_one_line_each_and_the_rest_imported(results, tmp_path):
    scenario(results, "mnist-triplet-none-s0", aug="none", loss="triplet")
    (results / "mnist-triplet-none-s0" / "probe.json").write_text('{"top1": 0.')
    scenario(results, "mnist-pairwise-none-s0", aug="none", loss="pairwise")
    (results / "mnist-pairwise-none-s0" / "tsne.csv").unlink()
    shutil.copytree(results / "baseline-mnist-raw_pixels-s0", results / "baseline-mnist-random_init-s0.partial")
    added, _, refused = import_results(results, tmp_path)
    assert added == 2
    assert [line.split(": ")[0].rsplit("/", 1)[1] for line in refused] == [
        "baseline-mnist-random_init-s0.partial",
        "mnist-pairwise-none-s0",
        "mnist-triplet-none-s0",
    ]
    assert all("\n" not in line for line in refused)


def test_study_of_groups_by_recipe_and_settings_beyond_the_main_axes():
    assert study_of({"recipe": "protocol", "variant": ""}) == "study: protocol recipe"
    assert study_of({"recipe": "adamw_onecycle", "variant": "features-backbone"}) == (
        "study: adamw_onecycle recipe, features-backbone"
    )
    assert study_of({"baseline": "supervised", "variant": "features-backbone"}) == "baselines: features-backbone"
    assert study_of({"baseline": "supervised"}) == "baselines"


def test_a_run_made_before_study_json_kept_params_gets_those_of_its_commit_with_its_overrides(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write_committed_params(tmp_path)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "params"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    study = {"baseline_commit": commit, "overrides": {"dataset": "cifar10", "train.lr": 0.01}}
    p = recorded_params(study, tmp_path)
    assert (p["dataset"], p["train"]["lr"], p["seed"]) == ("cifar10", 0.01, committed_params()["seed"])
    assert "study" not in p
    assert recorded_params({"overrides": {"dataset": "mnist"}}, tmp_path) == {"dataset": "mnist"}  # no commit known


def test_an_unreachable_tracking_server_is_one_line(results, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.study.import_runs", "--results", str(results)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error: MLflow import failed (store http://127.0.0.1:9): ") and "Traceback" not in done.stderr
    )


def test_a_collapsed_run_keeps_its_warnings_and_gets_no_map(results, tmp_path, monkeypatch):
    folder = results / "mnist-triplet-simclr-s0"
    for name, warning in (("train.json", "the encoder likely collapsed"), ("probe.json", "the features collapsed")):
        saved = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**saved, "warnings": [warning]}))
    (folder / "tsne.csv").write_text("x,y,class\n0.0000,0.0000,0\n0.0000,0.0000,7\n")  # as the tsne stage writes them
    assert record(read_run(folder), tmp_path).tags["warnings"] == "the encoder likely collapsed; the features collapsed"
    messages = []
    monkeypatch.setattr("contrastlab.infra.plots.placeholder", lambda message, title, path: messages.append(message))
    monkeypatch.setattr("contrastlab.infra.plots.tsne_scatter", lambda *args: pytest.fail("a map of one point"))
    figures(read_run(folder), tmp_path / "figures")
    assert messages == [
        "No t-SNE map: the features collapsed (every point at the origin; the run's warnings tag says more)."
    ]
    assert "warnings" not in record(read_run(results / "baseline-mnist-raw_pixels-s0"), tmp_path).tags


def edit(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_a_damaged_folder_is_refused_in_one_line_before_anything_is_logged_and_the_rest_imported(results, tmp_path):
    """`make mlflow`: a bad class label in a figure's CSV, a metric stored as text and a metric name longer than
    MLflow takes each refuse their own folder, named in one line; the healthy folders are all imported."""
    scenario(results, "mnist-triplet-none-s0", aug="none")
    (results / "mnist-triplet-none-s0" / "tsne.csv").write_text("x,y,class\n0.0,1.0,0\n2.0,3.0,eleven\n")
    scenario(results, "mnist-pairwise-none-s0", loss="pairwise", aug="none")
    edit(results / "mnist-pairwise-none-s0" / "probe.json", top3="0.99")
    scenario(results, "mnist-pairwise-simclr-s0", loss="pairwise")
    edit(results / "mnist-pairwise-simclr-s0" / "probe.json", per_class={"7" * 251: 0.5})
    scenario(results, "mnist-triplet-simclr-s1", seed=1, params={**PARAMS, "seed": 1})  # sorted after them all
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "contrastlab.study.import_runs", "--results", str(results)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if "mlflow" not in line] == [  # no log lines of MLflow's
        f"refused: {results}/mnist-pairwise-none-s0: probe.json: top3 is '0.99', not a finite number",
        f"refused: {results}/mnist-pairwise-simclr-s0: metric name 'class_acc.{'7' * 30}'... (261 characters) is "
        "longer than MLflow's 250",
        f"refused: {results}/mnist-triplet-none-s0: tsne.csv line 3: class 'eleven' is not one of mnist's classes",
    ]
    assert "MLflow: 3 runs imported, 0 already there, 3 folders refused" in done.stdout
    assert {"mnist-triplet-simclr-s0", "mnist-triplet-simclr-s1", "baseline-mnist-raw_pixels-s0"} < set(
        runs(tmp_path)[0]
    )


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: edit(f / "probe.json", top1=float("nan")), "probe.json: top1 is nan, not a finite number"),
        (lambda f: edit(f / "train.json", final_loss="0.1"), "train.json: final_loss is '0.1', not a finite number"),
        (
            lambda f: (f / "train_loss.csv").write_text("epoch,loss\n1,0.5\n2,inf\n"),
            "train_loss.csv line 3: loss is 'inf', not a finite number",
        ),
        (
            lambda f: (f / "confusion.csv").write_text("actual,predicted\n0,0\n7\n"),
            "confusion.csv line 3: predicted is missing",
        ),
        (lambda f: (f / "train_loss.csv").unlink(), "no train_loss.csv"),
        (
            lambda f: edit(f / "study.json", params={**PARAMS, "k" * 251: 1}),
            f"param name '{'k' * 40}'... (251 characters) is longer than MLflow's 250",
        ),
        (
            lambda f: edit(f / "study.json", params={**PARAMS, "note": "x" * 6001}),
            "param note is 6001 characters long, more than MLflow's 6000",
        ),
        (
            lambda f: edit(f / "probe.json", per_class={"a/../b": 0.5}),
            "metric name 'class_acc.a/../b' is not one MLflow "
            "takes (letters, digits and _ - . : / and spaces, never resolving to another path)",
        ),
    ],
)
def test_each_damage_is_named_in_the_refusal(results, tmp_path, damage, problem):
    damage(results / "mnist-triplet-simclr-s0")
    added, _, refused = import_results(results, tmp_path)
    assert (added, refused) == (1, [f"{results}/mnist-triplet-simclr-s0: {problem}"])


def test_a_folder_copied_under_another_name_is_refused_naming_the_one_kept(results, tmp_path):
    shutil.copytree(results / "mnist-triplet-simclr-s0", results / "mnist-triplet-simclr-s0-copy")
    added, known, refused = import_results(results, tmp_path)
    assert (added, known) == (2, 0)
    assert refused == [
        f"{results}/mnist-triplet-simclr-s0-copy: seed 0 of mnist-triplet-simclr again (already read "
        "from mnist-triplet-simclr-s0)"
    ]
