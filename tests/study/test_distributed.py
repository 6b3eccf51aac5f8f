"""The study on Dask (contrastlab.study.distributed): which run waits for which, what counts as a user's
mistake, the embedded cluster's address, and, for real, a scheduler and two worker processes on 127.0.0.1
with a bare git remote, a DVC remote and an MLflow tracking server, one worker killed mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from contrastlab.infra.errors import ParamError
from contrastlab.infra.stage import WATCHED_PID
from contrastlab.pipeline.download import MIRROR_ENV
from contrastlab.study.distributed import (
    Cluster,
    Source,
    connect,
    kept_baseline_line,
    kept_baselines_needed,
    needs,
    source_for,
    stages_run,
    start_cluster,
    use_worker_threads,
    user_error,
    worker_clone,
    worker_gpu,
)
from contrastlab.study.runner import plan
from project import committed_params
from servers import free_port, tracking_server
from tinydata import GIT, make_tiny_repo, sh

STUDY = (sys.executable, "-m", "contrastlab.study", "--results", "study/results")
BASELINES = committed_params()["study"]["baselines"]


def test_a_users_mistake_is_the_stages_one_line_and_anything_else_is_none():
    mistake = (
        "Running stage 'tsne':\n> python stages/tsne.py --embeddings data/embeddings.npz\n"
        "error: params.yaml: tsne.perplexity=100 but the map has only 80 points; use a perplexity below 80\n"
        "ERROR: failed to reproduce 'tsne': failed to run: python stages/tsne.py --embeddings "
        "data/embeddings.npz, exited with 2\n"
    )
    assert (
        user_error(mistake)
        == "params.yaml: tsne.perplexity=100 but the map has only 80 points; use a perplexity below 80"
    )
    crash = (
        "Traceback (most recent call last):\nRuntimeError: out of memory\nERROR: failed to reproduce 'train': "
        "failed to run: python stages/train.py, exited with 1\n"
    )
    assert user_error(crash) is None
    orphan = (
        "error: the process that started this stage (123) is gone; stopping\nERROR: failed to reproduce "
        "'train': failed to run: python stages/train.py, exited with 1\n"
    )
    assert user_error(orphan) is None


def test_each_scenario_waits_for_the_baselines_of_its_dataset_seed_and_features():
    raw = committed_params()
    raw["study"]["grids"]["main"] = {
        "dataset": ["mnist", "cifar10"],
        "loss": ["triplet"],
        "aug": ["none"],
        "probe.features": ["embedding", "backbone"],
    }
    runs = plan(raw, seeds=2)
    scenarios = [run for run in runs if not run.is_baseline]
    assert len(scenarios) == 8 and len(runs) == 8 + 8 * len(BASELINES)
    for run in scenarios:
        variant = "-features-backbone" if "backbone" in run.name else ""
        expected = {f"baseline-{run.identity.dataset}-{kind}{variant}-s{run.identity.seed}" for kind in BASELINES}
        assert {baseline.name for baseline in needs(run, runs)} == expected
    assert all(needs(run, runs) == [] for run in runs if run.is_baseline)


def test_kept_baselines_run_again_only_for_scenarios_still_to_run():
    raw = committed_params()
    raw["study"]["grids"]["main"] = {"dataset": ["mnist", "cifar10"], "loss": ["triplet"], "aug": ["none"]}
    runs = plan(raw, seeds=1)
    mnist_done = {run.name for run in runs if run.identity.dataset == "mnist"}
    baselines_kept = {run.name for run in runs if run.is_baseline}
    todo = [run for run in runs if run.name not in mnist_done | baselines_kept]  # only cifar10's scenario is left
    assert [run.name for run in todo] == ["cifar10-triplet-none-s0"]
    assert {run.name for run in kept_baselines_needed(runs, todo)} == {
        f"baseline-cifar10-{kind}-s0" for kind in BASELINES
    }
    assert kept_baselines_needed(runs, [run for run in runs if run.name not in mnist_done]) == []  # none kept yet


def test_a_kept_baseline_says_whether_the_cache_held_it_or_it_trained_again():
    log = (
        "Stage 'download' is cached - skipping run, checking out outputs\n\n"
        "Running stage 'baseline@supervised':\n> python stages/baseline.py --name supervised\n"
        "\rsupervised epoch 1/10: loss 1.6\x1b[2KRunning stage 'track':\n"
    )
    assert stages_run(log) == ["baseline@supervised", "track"]
    folder = Path("study/results/baseline-mnist-supervised-s0")
    trained = kept_baseline_line(folder.name, {"worker": "0", "stages_run": ["baseline@supervised"]}, folder)
    assert trained == (
        "baseline-mnist-supervised-s0 on worker 0: trained again into this DVC cache (ran "
        "baseline@supervised: changed since the folder was made); "
        "study/results/baseline-mnist-supervised-s0 kept as it was"
    )
    restored = kept_baseline_line(folder.name, {"worker": "1", "stages_run": []}, folder)
    assert restored == (
        "baseline-mnist-supervised-s0 on worker 1: restored from this DVC cache; "
        "study/results/baseline-mnist-supervised-s0 kept as it was"
    )


def test_the_embedded_cluster_listens_on_127_0_0_1_only_with_one_study_slot_and_its_threads_per_worker():
    environment = dict(os.environ)
    with connect(Cluster(workers=2, threads=2)) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        for address, worker in workers.items():
            assert address.startswith("tcp://127.0.0.1:") and worker["resources"] == {"study": 1}
            assert worker["nthreads"] == 2
        threads = client.submit(lambda: (use_worker_threads(), torch.get_num_threads()), resources={"study": 1})
        assert threads.result() == ("2", 2)
        here = psutil.Process()
        listening = [
            c.laddr
            for p in (here, *here.children(recursive=True))
            for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        assert len(listening) >= 3 and {address.ip for address in listening} == {"127.0.0.1"}  # HTTP servers too
    assert dict(os.environ) == environment  # Dask's worker variables (OMP_NUM_THREADS=1) stay out of the driver


def run_study(repo: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STUDY, *args], cwd=repo, env=env, capture_output=True, text=True)


def test_uncommitted_code_stops_a_distributed_study_in_one_line(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    with (repo / "src" / "contrastlab" / "methods" / "losses.py").open("a") as f:
        f.write("# changed\n")
    done = run_study(repo, env, "--workers", "1")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(
        "error: uncommitted changes to the pipeline's code (M src/contrastlab/methods/losses.py)"
    )
    assert not (repo / "study" / "results").exists()


def test_workers_on_other_machines_need_a_tracking_server(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    done = run_study(repo, env, "--scheduler", "tcp://127.0.0.1:1")
    assert done.returncode == 2
    assert done.stderr == (
        "error: workers on other machines log to the MLflow tracking server in MLFLOW_TRACKING_URI; "
        "set it (README: The study on a cluster)\n"
    )


def test_embedded_workers_read_the_mirror_this_repository_points_at(tmp_path, monkeypatch):
    """Their clones lie under .dvc/tmp/, where the committed relative path (../shared/datasets) leads nowhere."""
    repo = tmp_path / "project"
    repo.mkdir()
    params = committed_params()
    params["download"]["mirror"] = "../shared/datasets"
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (
        ("git", "init", "-q"),
        ("git", "add", "params.yaml"),
        (*GIT, "commit", "-qm", "params"),
        ("git", "config", "user.name", "someone"),
        ("git", "config", "user.email", "someone@example.com"),
    ):
        sh(*command, cwd=repo, env=os.environ)
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert source_for(repo, Cluster(workers=2), "").env[MIRROR_ENV] == str(tmp_path / "shared" / "datasets")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "elsewhere"))  # as the download stage reads it: the variable first
    assert source_for(repo, Cluster(workers=2), "").env[MIRROR_ENV] == str(tmp_path / "elsewhere")


def processes_watching(pid: int) -> list[int]:
    """The stage processes a worker `pid` started (they carry its id in their environment)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{WATCHED_PID}={pid}".encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            pass
    return found


@pytest.mark.e2e
def test_a_kept_worker_clone_catches_up_with_a_later_study_quietly(tmp_path, capfd):
    project, env = tmp_path / "project", dict(os.environ)
    project.mkdir()
    sh("git", "init", "-q", cwd=project, env=env)
    commits = []
    for text in ("first", "second"):
        (project / "params.yaml").write_text(f"dataset: mnist  # {text}\n")
        sh("git", "add", "-A", cwd=project, env=env)
        sh(*GIT, "commit", "-qm", text, cwd=project, env=env)
        commits.append(sh("git", "rev-parse", "HEAD", cwd=project, env=env).stdout.strip())
        source = Source(
            str(project), commits[-1], "seed: 1\n", ("test", "test@example.com"), {}, str(tmp_path / "work")
        )
        with worker_clone(source, "w1") as clone:  # the first study clones; the second reuses it, one commit behind
            assert sh("git", "rev-parse", "HEAD", cwd=clone, env=env).stdout.strip() == commits[-1]
            assert (clone / "params.yaml").read_text() == "seed: 1\n"
    assert "fatal" not in capfd.readouterr().err


@pytest.mark.e2e
@pytest.mark.dask
def test_a_study_on_a_dask_cluster_survives_a_killed_worker(tmp_path):
    repo, env = make_tiny_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["study"].update(
        seeds=1,
        grids={
            "main": {"dataset": ["mnist"], "loss": ["triplet", "pairwise"], "aug": ["none", "simclr"]},
            "mistake": {"dataset": ["mnist"], "loss": ["triplet"], "aug": ["none"], "tsne.perplexity": [100]},
        },
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = tmp_path / "origin.git"
    sh("git", "init", "-q", "--bare", str(remote), cwd=tmp_path, env=env)
    sh("dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"), cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "the study", cwd=repo, env=env)
    sh("git", "remote", "add", "origin", str(remote), cwd=repo, env=env)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=repo, env=env)
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        sh("git", "config", key, value, cwd=repo, env=env)

    dask = Path(sys.executable).parent / "dask"
    port = free_port()
    scheduler = f"tcp://127.0.0.1:{port}"
    processes = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
            env=env,
            stderr=open(tmp_path / "scheduler.log", "w"),  # noqa: SIM115 - the scheduler writes it after this call
            start_new_session=True,
        )
    ]
    folders = {name: tmp_path / name for name in ("w1", "w2")}  # each worker's own work folder
    for name, folder in folders.items():
        folder.mkdir()
        processes.append(
            subprocess.Popen(
                [
                    str(dask),
                    "worker",
                    scheduler,
                    "--name",
                    name,
                    "--nthreads",
                    "1",
                    "--resources",
                    "study=1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                ],
                env={**env, "TMPDIR": str(folder)},
                stderr=open(tmp_path / f"{name}.log", "w"),  # noqa: SIM115 - the worker writes it after this call
                start_new_session=True,
            )
        )
    victim = processes[1]
    try:
        with tracking_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as url:
            study_env = {**env, "MLFLOW_TRACKING_URI": url}
            driver = subprocess.Popen(
                [*STUDY, "--scheduler", scheduler],
                cwd=repo,
                env=study_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            log = folders["w1"] / "contrastlab-workers" / "w1.log"
            deadline = time.monotonic() + 600
            while not (log.exists() and "Running stage 'train'" in log.read_text()):  # w1 trains a scenario
                assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
                time.sleep(0.2)
            assert processes_watching(victim.pid)  # dvc and the train stage it runs
            victim.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 15
            while processes_watching(victim.pid):  # its stages notice and stop, though it is not reaped yet
                assert time.monotonic() < deadline, "the killed worker's stages are still running"
                time.sleep(0.2)
            out, err = driver.communicate(timeout=900)
            assert driver.returncode == 0, out + err

            names = [f"mnist-{loss}-{aug}-s0" for loss in ("triplet", "pairwise") for aug in ("none", "simclr")]
            names += [f"baseline-mnist-{kind}-s0" for kind in BASELINES]
            results = repo / "study" / "results"
            assert sorted(p.name for p in results.iterdir()) == sorted(names)  # none partial, none twice
            assert all(f"[{i}/{len(names)}]" in out for i in range(1, len(names) + 1)) and "on worker w2" in out

            import mlflow

            client = mlflow.MlflowClient(url)
            experiment = client.get_experiment_by_name("contrastlab")
            runs = client.search_runs([experiment.experiment_id])
            assert sorted(run.info.run_name for run in runs) == sorted(names)  # each logged once, complete
            assert all(run.info.status == "FINISHED" and "result_key" in run.data.tags for run in runs)

            mistake = run_study(repo, study_env, "--scheduler", scheduler, "--grid", "mistake")
            assert mistake.returncode == 1
            line = (
                "mnist-triplet-none-perplexity-100-s0: error: params.yaml: tsne.perplexity=100 but the map has "
                "only 80 points; use a perplexity below 80"
            )
            assert mistake.stdout.count(line) == 1 and mistake.stdout.count("error") == 1, mistake.stdout
            assert not (results / "mnist-triplet-none-perplexity-100-s0").exists()
            assert len(client.search_runs([experiment.experiment_id])) == len(names)

            kept = results / "mnist-triplet-none-s0"  # a lost folder comes back from origin's experiment, untrained
            before = (kept / "probe.json").read_text()
            shutil.rmtree(kept)
            again = run_study(repo, study_env, "--scheduler", scheduler)
            assert again.returncode == 0 and "1 to run on Dask" in again.stdout, again.stdout + again.stderr
            assert (kept / "probe.json").read_text() == before
            assert "Running stage" not in (folders["w2"] / "contrastlab-workers" / "w2.log").read_text()
            assert len(client.search_runs([experiment.experiment_id])) == len(names)

        pushed = sh("git", "ls-remote", str(remote), "refs/exps/*", cwd=tmp_path, env=env).stdout
        assert sorted(line.rsplit("/", 1)[1] for line in pushed.splitlines()) == sorted(names)  # none lost
        third = tmp_path / "third"  # another machine gets a scenario's encoder without training
        sh("git", "clone", "-q", "--branch", "main", str(remote), str(third), cwd=tmp_path, env=env)
        sh("dvc", "exp", "pull", "origin", "mnist-triplet-simclr-s0", cwd=third, env=env)
        applied = sh("dvc", "exp", "apply", "mnist-triplet-simclr-s0", cwd=third, env=env)
        assert "Running stage" not in applied.stdout + applied.stderr
        assert (third / "models" / "encoder.pt").stat().st_size > 0
        status = sh("dvc", "status", "train", cwd=third, env={**env, "PYTHONPATH": str(third / "src")})
        assert "up to date" in status.stdout
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)


def test_a_slurm_cluster_asks_for_one_study_slot_per_job_and_talks_tls(tmp_path):
    """No SLURM here: the cluster object alone (its scheduler runs here; `scale` would call sbatch)."""
    import dask

    with (
        dask.config.set({"jobqueue.slurm.memory": "4GB", "jobqueue.slurm.shared-temp-directory": str(tmp_path)}),
        start_cluster(Cluster(threads=2, cluster="slurm", jobs=3)) as cluster,
    ):
        assert cluster.scheduler_address.startswith("tls://")
        script = cluster.job_script()
        assert "--resources study=1" in script and "--nthreads 2" in script and "--tls-cert" in script
    with pytest.raises(ParamError, match=r"^--cluster lsfx: dask-jobqueue has no such cluster"):
        start_cluster(Cluster(cluster="lsfx"))


def test_the_embedded_clusters_workers_spread_over_several_gpus_unless_one_is_assigned_already():
    assert [worker_gpu(str(n), 2, {}) for n in range(3)] == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
        {"CUDA_VISIBLE_DEVICES": "0"},
    ]
    assert worker_gpu("1", 1, {}) == worker_gpu("1", 0, {}) == {}  # one GPU (shared) or none
    assert worker_gpu("1", 4, {"CUDA_VISIBLE_DEVICES": "3"}) == {}  # the cluster's scheduler chose
    assert worker_gpu("tcp://10.0.0.2:4000", 4, {}) == {}  # not the embedded cluster's numbering
