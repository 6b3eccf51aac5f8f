"""What limits a distributed study as workers grow (README: The study on more than one machine, "Scale").

Every finished run does three things outside its worker: pushes one git ref (`dvc exp push`), writes
its MLflow runs (the scenario's, and its baselines' the first time), and sends its outputs to the DVC
remote. This measures each one's capacity on this machine, against a local bare git remote, a local
MLflow tracking server (sqlite, one worker process: the README's single-machine setup) and a local-folder
DVC remote, sequentially and with `--clients` at once:

    python benchmarks/bench_scale.py            # about two minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import tracking_server  # noqa: E402

GIT = ("git", "-c", "user.name=bench", "-c", "user.email=bench@example.com")
RUN_PARAMS = 60  # about what the track stage logs per run: params, metrics, tags, three figures
RUN_METRICS = 25
RUN_TAGS = 15
FIGURE_BYTES = 60_000


def sh(*cmd: str, cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def timed(task, count: int, clients: int) -> tuple[float, float]:
    """(median seconds per task when run one at a time, tasks per second with `clients` at once)."""
    alone = []
    for i in range(count):
        start = time.perf_counter()
        task(i)
        alone.append(time.perf_counter() - start)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(task, range(count, count + count)))
    return statistics.median(alone), count / (time.perf_counter() - start)


def git_pushes(folder: Path, count: int, clients: int) -> tuple[float, float]:
    """Each task pushes one new experiment-like ref (a commit of a small file) to a bare remote."""
    remote, repo = folder / "remote.git", folder / "repo"
    sh("git", "init", "-q", "--bare", str(remote), cwd=folder)
    sh("git", "init", "-q", str(repo), cwd=folder)
    (repo / "params.yaml").write_text("seed: 0\n")
    sh("git", "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-qm", "base", cwd=repo)
    commits = []
    for i in range(2 * count):
        blob = subprocess.run(
            ["git", "hash-object", "-w", "--stdin"],
            cwd=repo,
            input=f"seed: {i}\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        tree = subprocess.run(
            ["git", "mktree"],
            cwd=repo,
            input=f"100644 blob {blob}\tparams.yaml\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commits.append(
            subprocess.run(
                [*GIT, "commit-tree", tree, "-p", "HEAD", "-m", f"exp {i}"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    return timed(
        lambda i: sh("git", "push", "-q", str(remote), f"{commits[i]}:refs/exps/aa/bench/exp-{i}", cwd=repo),
        count,
        clients,
    )


def mlflow_runs(folder: Path, count: int, clients: int) -> tuple[float, float]:
    import mlflow

    figure = folder / "figure.png"
    figure.write_bytes(os.urandom(FIGURE_BYTES))
    with tracking_server(f"sqlite:///{folder / 'mlflow.db'}", folder) as url:
        client = mlflow.MlflowClient(url)
        experiment = client.create_experiment("bench")

        def log_run(i: int) -> None:
            run = client.create_run(experiment, run_name=f"run-{i}").info.run_id
            client.log_batch(
                run,
                params=[mlflow.entities.Param(f"p{j}", str(j)) for j in range(RUN_PARAMS)],
                metrics=[mlflow.entities.Metric(f"m{j}", j / 7, 0, j) for j in range(RUN_METRICS)],
                tags=[mlflow.entities.RunTag(f"t{j}", str(j)) for j in range(RUN_TAGS)],
            )
            for name in ("tsne", "confusion", "train_loss"):
                client.log_artifact(run, str(figure), artifact_path=name)
            client.set_terminated(run)

        return timed(log_run, count, clients)


def dvc_pushes(folder: Path, megabytes: int) -> float:
    """MB/s of `dvc push` of one new file of `megabytes` (random: nothing to deduplicate) to a folder remote."""
    repo = folder / "dvc-repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    sh("dvc", "remote", "add", "-d", "shared", str(folder / "dvc-remote"), cwd=repo)
    (repo / "outputs.bin").write_bytes(os.urandom(megabytes * 2**20))
    sh("dvc", "add", "-q", "outputs.bin", cwd=repo)
    start = time.perf_counter()
    sh("dvc", "push", "-q", cwd=repo)
    return megabytes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20, help="tasks per measurement")
    parser.add_argument("--clients", type=int, default=8, help="tasks at once in the concurrent measurement")
    parser.add_argument("--megabytes", type=int, default=60, help="one run's outputs (the embeddings: ~58 MB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        git_alone, git_rate = git_pushes(folder, args.count, args.clients)
        mlflow_alone, mlflow_rate = mlflow_runs(folder, args.count, args.clients)
        dvc_rate = dvc_pushes(folder, args.megabytes)
    print(f"git ref push: {git_alone:.2f} s each alone, {git_rate:.1f}/s with {args.clients} at once")
    print(
        f"MLflow run (server, sqlite, 1 worker; {RUN_PARAMS} params, {RUN_METRICS} metrics, {RUN_TAGS} tags, "
        f"3 figures): {mlflow_alone:.2f} s each alone, {mlflow_rate:.1f}/s with {args.clients} at once"
    )
    print(f"DVC push of {args.megabytes} MB to a local folder remote: {dvc_rate:.0f} MB/s")


if __name__ == "__main__":
    main()
