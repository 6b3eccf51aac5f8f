import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from contrastlab.infra.errors import TrackingError
from contrastlab.infra.files import one_line, project_root
from contrastlab.infra.tracking import (
    DatasetRef,
    RunRecord,
    dataset_digest,
    describe,
    flatten,
    lock_holders,
    open_store,
    probe_metrics,
    result_key,
    run_identity,
    runs_url,
    tracking_uri,
)
from contrastlab.methods.encoders import make_encoder, save_encoder
from contrastlab.study.names import Scenario

PARAMS = {"dataset": "mnist", "loss": "triplet", "aug": "none", "seed": 0, "train": {"lr": 0.15, "epochs": 2}}
FINISHED = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DIGESTS = {"train": {"images": "a" * 64, "labels": "b" * 64}, "test": {"images": "c" * 64, "labels": "d" * 64}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "figure.png").write_bytes(b"png")
    return tmp_path


def log(root, metrics, **kw):
    run = RunRecord(
        name="mnist-triplet-none",
        params=PARAMS,
        metrics=metrics,
        epoch_losses=[0.5, 0.25],
        artifacts=[root / "figure.png"],
        tags={"scenario": "mnist-triplet-none"},
        finished=FINISHED,
        duration_s=100.0,
        description="**mnist / triplet / none**",
        source="stages/train.py",
        commit="0123abc",
        dataset=DatasetRef("mnist", DIGESTS, "411a1f8dadee2bd62f801e9dbce39447.dir"),
        **kw,
    )
    with open_store(root) as opened:
        return opened.log(run)


def test_one_run_with_params_metrics_loss_curve_and_artifacts(store):
    run_id, created = log(store, {"probe_top1": 0.9})
    assert created
    mlflow.set_tracking_uri(tracking_uri(store))
    run = mlflow.get_run(run_id)
    assert run.info.run_name == "mnist-triplet-none"
    assert run.data.params["train.lr"] == "0.15" and run.data.params["aug"] == "none"
    assert run.data.metrics["probe_top1"] == 0.9
    history = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]
    assert run.data.tags["scenario"] == "mnist-triplet-none"
    assert (store / "mlflow.db").exists()
    assert list(store.glob("mlruns/contrastlab/*/artifacts/figure.png"))  # artifacts beside the db, not in the cwd


def test_a_run_carries_its_lineage_in_mlflow_own_fields(store):
    """Duration is the training time, Source and Version the code, the description the settings, the
    dataset an input with its content digest (the UI's Dataset column and filter)."""
    run_id, _ = log(store, {"probe_top1": 0.9})
    client = mlflow.MlflowClient(tracking_uri(store))
    run = client.get_run(run_id)
    assert (run.info.start_time, run.info.end_time) == (1_699_999_900_000, 1_700_000_000_000)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert (tags["mlflow.source.name"], tags["mlflow.source.git.commit"], tags["mlflow.source.type"]) == (
        "stages/train.py",
        "0123abc",
        "LOCAL",
    )
    assert tags["mlflow.note.content"] == "**mnist / triplet / none**"
    trained_on, scored_on = run.inputs.dataset_inputs
    assert (trained_on.dataset.name, trained_on.dataset.digest) == ("mnist", dataset_digest(DIGESTS))
    assert {t.key: t.value for t in trained_on.tags} == {
        "mlflow.data.context": "training",
        "dvc_md5": "411a1f8dadee2bd62f801e9dbce39447.dir",
    }
    assert (scored_on.dataset.name, scored_on.dataset.digest) == (
        "mnist-test",
        dataset_digest({"test": DIGESTS["test"]}),
    )
    assert {t.key: t.value for t in scored_on.tags} == {"mlflow.data.context": "evaluation"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    found = client.search_runs([run.info.experiment_id], filter_string=f"dataset.digest = '{dataset_digest(DIGESTS)}'")
    assert [r.info.run_id for r in found] == [run_id]


def test_a_probe_scored_on_held_out_training_images_names_them_not_the_test_split():
    held_out = DatasetRef("mnist", DIGESTS, validation_per_class=1000).evaluation
    assert held_out == ("mnist-validation", dataset_digest({"train": DIGESTS["train"], "validation_per_class": 1000}))
    assert held_out[1] != DatasetRef("mnist", DIGESTS, validation_per_class=500).evaluation[1]


def test_dataset_digest_fits_mlflow_and_follows_the_content():
    assert len(dataset_digest(DIGESTS)) == 32  # MLflow refuses digests over 36 characters
    assert dataset_digest(DIGESTS) == dataset_digest({"test": DIGESTS["test"], "train": DIGESTS["train"]})
    assert dataset_digest(DIGESTS) != dataset_digest({**DIGESTS, "test": {"images": "e" * 64, "labels": "d" * 64}})


def test_the_encoder_is_a_pytorch_model_that_loads_and_embeds_as_the_stage_file(store):
    torch.manual_seed(0)
    encoder = make_encoder(1)
    save_encoder(
        encoder, {"channels": 1, "head": "sigmoid", "arch": "study", "embedding_dim": 32}, store / "encoder.pt"
    )
    example = np.random.default_rng(0).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)
    run_id, _ = log(store, {"probe_top1": 0.9}, encoder=store / "encoder.pt", input_example=example)
    mlflow.set_tracking_uri(tracking_uri(store))
    loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/encoder")
    saved = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/encoder", dst_path=str(store / "download")))
    assert (saved / "data" / "model.pt2").is_file()  # torch.export's format, asked for, not MLflow's default
    images = torch.from_numpy(np.random.default_rng(1).uniform(-1, 1, (7, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(loaded(images), encoder.eval()(images))  # another batch size than the example's
    (model,) = mlflow.search_logged_models(output_format="list")  # what the Models view lists, with these metrics
    scored = {m.key: (m.value, m.dataset_name, m.run_id) for m in model.metrics}
    assert scored == {"probe_top1": (0.9, "mnist-test", run_id)}  # the probe's; train_loss stays the run's alone
    version = mlflow.register_model(f"runs:/{run_id}/encoder", "contrastlab-encoder")
    assert (version.name, int(version.version), version.status) == ("contrastlab-encoder", 1, "READY")


def test_the_same_result_twice_is_one_run_a_new_result_is_another(store):
    first, _ = log(store, {"probe_top1": 0.9})
    again, created = log(store, {"probe_top1": 0.9})
    assert (again, created) == (first, False)
    other, created = log(store, {"probe_top1": 0.8})
    assert created and other != first


def test_a_retrain_with_the_same_result_but_another_training_time_is_the_same_run(store):
    first, _ = log(store, {"probe_top1": 0.9, "train_time_s": 100.0, "images_per_s": 5000.0})
    again, created = log(store, {"probe_top1": 0.9, "train_time_s": 93.5, "images_per_s": 5311.0})
    assert (again, created) == (first, False)


def test_a_run_nests_under_its_parent(store):
    parent, _ = log(store, {"probe_top1": 0.5})
    child, _ = log(store, {"probe_top1": 0.9}, parent_id=parent)
    assert mlflow.MlflowClient(tracking_uri(store)).get_run(child).data.tags["mlflow.parentRunId"] == parent


def test_describe_names_the_scenario_encoder_probe_and_recipe():
    p = {
        **PARAMS,
        "model": {"arch": "study", "embedding_dim": 32},
        "split": {"validation_per_class": 0},
        "probe": {"features": "backbone"},
        "train": {
            "optimizer": "sgd",
            "schedule": "constant",
            "batch_size": 1024,
            "head": "sigmoid",
            "precision": "fp32",
        },
    }
    assert describe(p, {"epochs": 10, "lr": 0.15}) == (
        "**mnist / triplet / none**, seed 0; encoder `study` (32-d embedding); linear probe of the backbone on the "
        "test set; trained 10 epochs at lr 0.15 (sgd, constant, batch 1024, sigmoid head, fp32)."
    )
    baseline = {
        "baseline": "raw_pixels",
        "dataset": "cifar10",
        "seed": 1,
        "split": {"validation_per_class": 1000},
        "probe": {"features": "embedding"},
    }
    assert describe(baseline) == (
        "**cifar10**, baseline `raw_pixels`, seed 1; linear probe of the embedding on 1000 "
        "held-out training images per class."
    )


def test_runs_url_opens_the_model_training_side_of_the_ui():
    assert runs_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )


def test_unwritable_store_raises(store, monkeypatch):
    (store / "not-a-folder").write_text("")  # even root cannot create a database below a file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/not-a-folder/mlflow.db")
    with pytest.raises(OSError):  # the writers' lock file beside mlflow.db cannot be made there either
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
    assert result_key(PARAMS, {"m": 1, "train_time_s": 5}) == result_key(PARAMS, {"m": 1, "train_time_s": 6})


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
        "mnist-triplet-simclr-negatives-hard-tuned-s1",
        "mnist-triplet-simclr-negatives-hard-tuned",
    )
    # a name DVC made up, or one that is not this scenario's and seed's, is shown beside the scenario
    assert run_identity(scenario, "dusty-hops") == ("mnist-triplet-simclr (dusty-hops)", group)
    assert run_identity(scenario, "mnist-triplet-simclr-s1") == (
        "mnist-triplet-simclr (mnist-triplet-simclr-s1)",
        group,
    )
    assert run_identity(scenario, "mnist-triplet-none-s0")[1] == group


def test_probe_metrics_names_every_number_of_a_probe_summary():
    summary = {"top1": 0.9, "top3": 0.99, "knn": 0.8, "per_class": {"0": 0.5, "cat": 1.0}, "shifted_top1": {"-3": 0.7}}
    assert probe_metrics(summary) == {
        "probe_top1": 0.9,
        "probe_top3": 0.99,
        "knn_top1": 0.8,
        "class_acc.0": 0.5,
        "class_acc.cat": 1.0,
        "shift_top1.-3": 0.7,
    }
    assert probe_metrics({"top1": 0.1, "top3": 0.3, "knn": 0.2}) == {
        "probe_top1": 0.1,
        "probe_top3": 0.3,
        "knn_top1": 0.2,
    }


def test_opening_the_store_removes_runs_a_killed_writer_left_and_keeps_complete_runs_and_live_writers(store, capsys):
    """A run is complete once tagged `result_key`; a writer killed before that leaves it RUNNING. On a shared server
    only a run whose writer was a process of this host that has ended is surely orphaned; under the local store's
    lock every incomplete run is."""
    complete, _ = log(store, {"probe_top1": 0.9})
    ended = subprocess.Popen(["true"])
    ended.wait()
    host = socket.gethostname()
    with open_store(store) as opened:
        client = opened.client

        def running(name, **tags):
            return client.create_run(opened.experiment_id, run_name=name, tags=tags).info.run_id

        dead = running("killed here", writer=f"{host}:{ended.pid}")
        live = running("still logging here", writer=f"{host}:{os.getpid()}")
        elsewhere = running("killed on another machine", writer=f"other-{host}:{ended.pid}")
        unnamed = running("logged before writers were named")
        tagged = running("killed after it was complete", writer=f"{host}:{ended.pid}", result_key="0123456789abcdef")
        capsys.readouterr()
        opened.remove_incomplete(exclusive=False)  # as on a tracking server
    assert capsys.readouterr().out == (
        f"MLflow: removed 1 incomplete run left by an interrupted track stage or import (killed here {dead})\n"
    )
    active = {run.info.run_id for run in client.search_runs([opened.experiment_id])}
    assert active == {complete, live, elsewhere, unnamed, tagged}
    assert client.get_run(complete).data.tags["writer"] == f"{host}:{os.getpid()}"

    with open_store(store):  # the local store, under its lock: nothing else is writing
        pass
    assert {run.info.run_id for run in client.search_runs([opened.experiment_id])} == {complete, tagged}
    assert "MLflow: removed 3 incomplete runs left by an interrupted track stage or import (" in capsys.readouterr().out


def test_a_new_store_killed_while_mlflow_creates_its_tables_leaves_none_and_the_next_one_is_made_whole(store):
    """MLflow takes seconds to create and migrate a new store's tables; killed half way, a store made in place failed
    forever ("duplicate column name: step"). It is made beside its name and renamed in when complete."""
    code = (
        "import sys; from pathlib import Path; from contrastlab.infra.tracking import open_store; "
        "open_store(Path(sys.argv[1])).__enter__()"
    )
    creating = subprocess.Popen([sys.executable, "-c", code, str(store)])
    partial = store / "mlflow.db.partial"
    deadline = time.monotonic() + 120
    while not partial.exists():
        assert creating.poll() is None and time.monotonic() < deadline, "the store was not made at mlflow.db.partial"
        time.sleep(0.01)
    time.sleep(0.5)  # MLflow is migrating the tables now
    creating.kill()
    creating.wait()
    assert not (store / "mlflow.db").exists()

    run_id, created = log(store, {"probe_top1": 0.9})
    assert created and mlflow.MlflowClient(tracking_uri(store)).get_run(run_id).info.status == "FINISHED"
    assert sorted(path.name for path in store.glob("mlflow.db*")) == ["mlflow.db", "mlflow.db.lock"]


def half_migrated(db: Path) -> None:
    """What a store made in place was left as when killed after MLflow's first migration had altered a table but
    before it recorded that it had: every later open tried to add the column again."""
    import sqlalchemy
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("ALTER TABLE metrics ADD COLUMN step BIGINT DEFAULT 0 NOT NULL"))
    engine.dispose()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda db: db.write_bytes(b"not sqlite" * 100), "file is not a database"),
        (half_migrated, "duplicate column name: step"),
    ],
    ids=["garbage", "half migrated"],
)
def test_a_store_mlflow_cannot_open_is_one_line_saying_to_move_it_aside_which_starts_afresh(store, damage, reason):
    db = store / "mlflow.db"
    damage(db)
    with pytest.raises(TrackingError) as raised:
        log(store, {"probe_top1": 0.9})
    assert str(raised.value) == (
        f"{db} is not a complete MLflow store ({reason}): move it aside (`mv {db} "
        f"{db}.broken`); the next run makes a new one, and `make mlflow` re-imports the "
        "committed study"
    )
    db.rename(store / "mlflow.db.broken")
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # the next run: a new process, as `dvc repro` starts
        assert pool.apply(log_one, (str(store), 0.9))


def test_a_copied_repository_logs_its_artifacts_into_its_own_mlruns_and_leaves_the_original_alone(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    (original / "figure.png").write_bytes(b"png")
    first, _ = log(original, {"probe_top1": 0.9})
    shutil.copytree(original, copy)
    before = {path: path.read_bytes() for path in original.rglob("*") if path.is_file()}
    capsys.readouterr()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # set by MLflow in this process; the copy's `dvc repro` is another

    second, created = log(copy, {"probe_top1": 0.8})
    assert created
    assert capsys.readouterr().out.startswith(
        f"MLflow: this repository was moved or copied; mlflow.db now keeps artifacts in {(copy / 'mlruns').as_uri()}, "
        f"not {(original / 'mlruns').as_uri()}\n"
    )
    client = mlflow.MlflowClient(tracking_uri(copy))
    for run_id in (first, second):  # the copied run's artifacts are the copy's too
        assert client.get_run(run_id).info.artifact_uri.startswith((copy / "mlruns").as_uri() + "/")
        assert [f.path for f in client.list_artifacts(run_id)] == ["figure.png"]
    assert list(copy.glob(f"mlruns/contrastlab/{second}/artifacts/figure.png"))
    assert {path: path.read_bytes() for path in original.rglob("*") if path.is_file()} == before
    assert not list(original.glob(f"mlruns/contrastlab/{second}"))


HOLDERS = {
    "a sqlite write transaction": "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "db.execute('BEGIN EXCLUSIVE'); print('held', flush=True); time.sleep(60)",
    "the writers' lock": "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1] + '.lock'); "
    "lock.acquire(); print('held', flush=True); time.sleep(60)",
}


@pytest.mark.parametrize("holder", HOLDERS)
def test_a_store_another_process_holds_is_waited_for_then_one_line_naming_it(store, monkeypatch, capsys, holder):
    log(store, {"probe_top1": 0.9})
    monkeypatch.setenv("CONTRASTLAB_MLFLOW_WAIT", "1")
    db = store / "mlflow.db"
    holding = subprocess.Popen([sys.executable, "-c", HOLDERS[holder], str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holding.stdout.readline() == "held\n"
        who = f"pid {holding.pid} ({one_line(f'{sys.executable} -c {HOLDERS[holder]} {db}', 100)})"
        capsys.readouterr()
        with pytest.raises(TrackingError) as raised:
            log(store, {"probe_top1": 0.8})
        assert capsys.readouterr().out == f"MLflow: mlflow.db is in use by {who}; waiting up to 1 s\n"
        assert str(raised.value) == (
            f"{db} is still in use by {who} after 1 s: let it finish or end it "
            "(CONTRASTLAB_MLFLOW_WAIT=<seconds> waits longer)"
        )
    finally:
        holding.kill()
        holding.wait()
    assert log(store, {"probe_top1": 0.8})[1]  # free again: logged


def test_the_holders_named_are_the_other_processes_that_have_the_file_open(tmp_path):
    """No portable call names a lock's holder, so every other process that has the file open is named, lock or not."""
    path = tmp_path / "mlflow.db.lock"
    path.touch()
    script = "import sys; file = open(sys.argv[1]); print('open', flush=True); sys.stdin.read()"
    with path.open():  # this process, the one that waits: never named
        assert lock_holders(path) == "another process"
        with subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as opener:
            assert opener.stdout.readline() == "open\n"
            assert lock_holders(path) == f"pid {opener.pid} ({one_line(f'{sys.executable} -c {script} {path}', 100)})"
            opener.stdin.close()


LOG_IN_A_STAGE = """
import sys
from pathlib import Path
from contrastlab.infra.tracking import RunRecord, open_store
record = RunRecord(name="r", params={"seed": 0}, metrics={"probe_top1": 0.5}, tags={}, finished=1.7e9)
try:
    with open_store(Path(sys.argv[1])) as store:
        store.log(record)
except Exception as err:
    sys.exit(f"error: {type(err).__name__}")  # as the track stage's line, which names the store and the exception
"""


def make_read_only(db: Path) -> Callable[[], None]:
    """Make `db` read-only (sqlite then opens it read-only); return what undoes it. As root, whom file modes do not
    stop, the file is made immutable (`chattr +i`), or the test is skipped where that is not allowed."""
    mode = db.stat().st_mode
    db.chmod(0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        db.chmod(mode)
        pytest.skip("running as root, whom file modes do not stop, and `chattr +i` is not allowed here")

    def undo() -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        db.chmod(mode)

    return undo


@pytest.mark.parametrize("refuse", ["read-only store", "file size limit"])
def test_a_store_that_refuses_writes_is_the_stage_line_alone_without_mlflow_traceback(store, refuse):
    """MLflow logged a ~30-line SQLAlchemy traceback before the stage's one line. As root, whom a read-only file does
    not stop unless `chattr +i` is allowed, a file size limit refuses the writes too."""
    first, _ = log(store, {"probe_top1": 0.9})
    undo, limit = (lambda: None), None
    if refuse == "read-only store":
        undo = make_read_only(store / "mlflow.db")
    else:
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))  # noqa: E731 - writes fail as on a full disk
    try:
        result = subprocess.run(
            [sys.executable, "-c", LOG_IN_A_STAGE, str(store)],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=limit,
        )
    finally:
        undo()
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "error: MlflowException\n")
    assert log(store, {"probe_top1": 0.9}) == (first, False)  # the store as it was: its run, nothing half-logged
