import multiprocessing
from pathlib import Path

import mlflow
import pytest

from contrastlab.infra.files import project_root
from contrastlab.infra.tracking import flatten, log_scenario, probe_metrics, result_key, run_identity, tracking_uri
from contrastlab.study.names import Scenario

PARAMS = {"dataset": "mnist", "loss": "triplet", "aug": "none", "seed": 0, "train": {"lr": 0.15, "epochs": 2}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "encoder.pt").write_bytes(b"weights")
    return tmp_path


def log(root, metrics, **kw):
    return log_scenario(run_name="mnist-triplet-none", params=PARAMS, metrics=metrics, epoch_losses=[0.5, 0.25],
                        artifacts=[root / "encoder.pt"], tags={"scenario": "mnist-triplet-none"}, root=root, **kw)


def test_one_run_with_params_metrics_loss_curve_and_artifacts(store):
    run_id, created = log(store, {"probe_top1": 0.9})
    assert created
    mlflow.set_tracking_uri(tracking_uri(store))
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "mnist-triplet-none"
    assert run.data.params["train.lr"] == "0.15" and run.data.params["aug"] == "none"
    assert run.data.metrics["probe_top1"] == 0.9
    assert [m.value for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")] == [0.5, 0.25]
    assert run.data.tags["scenario"] == "mnist-triplet-none"
    assert (store / "mlflow.db").exists()
    assert list(store.glob("mlruns/contrastlab/*/artifacts/encoder.pt"))  # artifacts beside the db, not in the cwd


def test_the_same_result_twice_is_one_run_a_new_result_is_another(store):
    first, _ = log(store, {"probe_top1": 0.9})
    again, created = log(store, {"probe_top1": 0.9})
    assert (again, created) == (first, False)
    other, created = log(store, {"probe_top1": 0.8})
    assert created and other != first


def test_unwritable_store_raises(store, monkeypatch):
    (store / "not-a-folder").write_text("")  # even root cannot create a database below a file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/not-a-folder/mlflow.db")
    with pytest.raises(Exception):
        log(store, {"probe_top1": 0.9})


def test_store_follows_dvc_root_and_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert project_root() == tmp_path.resolve()
    assert tracking_uri(project_root()) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(project_root()) == "http://127.0.0.1:5000"


def test_flatten_uses_dvc_param_names_and_key_depends_on_content():
    assert flatten({"a": 1, "train": {"lr": 0.1, "x": {"y": 2}}}) == {"a": 1, "train.lr": 0.1, "train.x.y": 2}
    assert result_key(PARAMS, {"m": 1}) == result_key(dict(PARAMS), {"m": 1})
    assert result_key(PARAMS, {"m": 1}) != result_key(PARAMS, {"m": 2})


def log_one(root: str, top1: float) -> str:
    return log(Path(root), {"probe_top1": top1})[0]


def test_four_processes_logging_at_once_to_a_new_store_make_four_complete_runs(store):
    """The lock beside mlflow.db serialises writers: without it, processes creating the database and the
    experiment at the same moment fail ("table already exists", "database is locked", duplicate name)."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        run_ids = pool.starmap(log_one, [(str(store), 0.9 + i / 100) for i in range(4)])
    assert len(set(run_ids)) == 4
    mlflow.set_tracking_uri(tracking_uri(store))
    runs = mlflow.search_runs(experiment_names=["contrastlab"], output_format="list")
    assert sorted(run.data.metrics["probe_top1"] for run in runs) == [0.9, 0.91, 0.92, 0.93]
    assert all(run.info.status == "FINISHED" and "result_key" in run.data.tags for run in runs)


def test_run_identity_names_study_variants_apart_and_keeps_seeds_of_one_variant_together():
    scenario, seed1 = Scenario("mnist", "triplet", "simclr"), Scenario("mnist", "triplet", "simclr", seed=1)
    group = "mnist-triplet-simclr"
    assert run_identity(scenario, None) == (group, group)  # `dvc repro` in the workspace
    assert run_identity(scenario, group) == (group, group)  # `dvc exp run -n mnist-triplet-simclr`
    assert run_identity(seed1, "mnist-triplet-simclr-s1") == ("mnist-triplet-simclr-s1", group)
    assert run_identity(seed1, "mnist-triplet-simclr-negatives-hard-tuned-s1") == (
        "mnist-triplet-simclr-negatives-hard-tuned-s1", "mnist-triplet-simclr-negatives-hard-tuned")
    # a name DVC made up, or one that is not this scenario's and seed's, is shown beside the scenario
    assert run_identity(scenario, "dusty-hops") == ("mnist-triplet-simclr (dusty-hops)", group)
    assert run_identity(scenario, "mnist-triplet-simclr-s1") == ("mnist-triplet-simclr (mnist-triplet-simclr-s1)", group)
    assert run_identity(scenario, "mnist-triplet-none-s0")[1] == group


def test_probe_metrics_names_every_number_of_a_probe_summary():
    summary = {"top1": 0.9, "top3": 0.99, "knn": 0.8, "per_class": {"0": 0.5, "cat": 1.0}, "shifted_top1": {"-3": 0.7}}
    assert probe_metrics(summary) == {"probe_top1": 0.9, "probe_top3": 0.99, "knn_top1": 0.8, "class_acc.0": 0.5,
                                      "class_acc.cat": 1.0, "shift_top1.-3": 0.7}
    assert probe_metrics({"top1": 0.1, "top3": 0.3, "knn": 0.2}) == {"probe_top1": 0.1, "probe_top3": 0.3,
                                                                      "knn_top1": 0.2}
