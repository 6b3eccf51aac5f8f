"""More than one machine, with existing engines: an MLflow tracking server backed by PostgreSQL (a
real server, started here on 127.0.0.1 from Debian's packages) with its own artifact store, and a
shared DVC remote for the cache. Two clones of the project stand for two machines.

Needs PostgreSQL's server binaries (`apt-get install postgresql`); skipped without them unless
CONTRASTLAB_REQUIRE_POSTGRES=1 (as in .ci/run, which installs them), where their absence fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

import servers
from servers import free_port
from tinydata import GIT, make_tiny_repo, sh

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def postgres_bin() -> Path:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    if found is None:
        if os.environ.get("CONTRASTLAB_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(found).resolve().parent


def as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` account the Debian package creates."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 with a database `mlflow`; yields its SQLAlchemy URI."""
    bin_dir, port = postgres_bin(), free_port()
    data = Path(tempfile.mkdtemp(prefix="contrastlab-pg-"))  # not below pytest's root-only folder
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")

    def run(tool: str, *args: str) -> None:
        done = subprocess.run(as_postgres_user([str(bin_dir / tool), *args]), capture_output=True, text=True)
        assert done.returncode == 0, f"{tool} failed:\n{done.stdout}\n{done.stderr}"

    run("initdb", "-D", str(data), "-U", "mlflow", "--auth=trust")
    run(
        "pg_ctl",
        "-D",
        str(data),
        "-l",
        str(data / "server.log"),
        "-w",
        "start",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {data}",
    )
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"  # psycopg2-binary's driver
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def tracking_server(postgres, tmp_path):
    """`mlflow server` on 127.0.0.1, runs in PostgreSQL, artifacts in a folder it serves; yields its URL."""
    with servers.tracking_server(postgres, tmp_path) as url:
        yield url


def test_two_machines_share_a_postgres_tracking_server_and_a_dvc_remote(tracking_server, tmp_path):
    first, env = make_tiny_repo(tmp_path)
    env = {**env, "MLFLOW_TRACKING_URI": tracking_server}
    sh("dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"), cwd=first, env=env)
    sh("git", "add", "-A", cwd=first, env=env)
    sh(*GIT, "commit", "-qm", "shared remote", cwd=first, env=env)
    sh("git", "init", "-q", "--bare", str(tmp_path / "shared.git"), cwd=tmp_path, env=env)
    sh("git", "remote", "add", "origin", str(tmp_path / "shared.git"), cwd=first, env=env)
    sh("git", "push", "-q", "origin", "HEAD", cwd=first, env=env)
    second = tmp_path / "second"
    sh("git", "clone", "-q", str(tmp_path / "shared.git"), str(second), cwd=tmp_path, env=env)
    second_env = {**env, "PYTHONPATH": str(second / "src")}

    # each machine runs its own scenario and shares it: git refs to the git remote, data to the DVC remote
    sh("dvc", "exp", "run", "-n", "first-none", "-S", "aug=none", cwd=first, env=env)
    sh("dvc", "exp", "push", "origin", "first-none", cwd=first, env=env)
    sh("dvc", "exp", "run", "-n", "second-prs", "-S", "aug=pad_rotate_scale", cwd=second, env=second_env)
    sh("dvc", "exp", "push", "origin", "second-prs", cwd=second, env=second_env)
    trained_on_second = (second / "models" / "encoder.pt").read_bytes()

    # the first machine gets the second's experiment, encoder included, without training it
    sh("dvc", "exp", "pull", "origin", "second-prs", cwd=first, env=env)
    applied = sh("dvc", "exp", "apply", "second-prs", cwd=first, env=env)
    assert "Running stage" not in applied.stdout
    assert (first / "models" / "encoder.pt").read_bytes() == trained_on_second

    import mlflow

    mlflow.set_tracking_uri(tracking_server)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("contrastlab")
    runs = [run for run in client.search_runs([experiment.experiment_id]) if "dvc_experiment" in run.data.tags]
    assert sorted(run.info.run_name for run in runs) == [
        "mnist-triplet-none (first-none)",
        "mnist-triplet-pad_rotate_scale (second-prs)",
    ]
    for run in runs:
        assert run.data.metrics["probe_top1"] > 0 and run.data.params["aug"] == run.data.tags["aug"]
        names = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
        assert {"tsne.png", "confusion.png", "train_loss.png"} <= names
        encoder = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/encoder")  # through the server
        assert encoder(torch.zeros(2, 1, 28, 28)).shape == (2, 32)
    assert list((tmp_path / "artifacts").rglob("MLmodel"))  # the encoders are stored by the server, not by the clients
