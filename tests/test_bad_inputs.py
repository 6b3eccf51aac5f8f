"""Bad input loses nothing: a table of user mistakes and damaged files, each run as a user would
(mostly `dvc repro`) in a fresh copy of a tiny repository whose pipeline has already run once.

For every row: the command fails, the user sees the exact one-line error (no traceback), no
partial file is left anywhere, every output that is still in the workspace is unchanged, and after
undoing the mistake `git checkout` and `dvc checkout` bring back every output exactly (nothing was
lost or overwritten with something half-made) and `dvc status` has nothing to do.

Beside the table, as their own tests: a second `dvc repro` while one runs, and a `dvc repro` killed while it
downloads.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from contrastlab.infra.params import SCHEMA
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.encoders import ARCHS
from contrastlab.methods.losses import LOSSES as LOSS_REGISTRY
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import CIFAR_ARCHIVE, _idx_names
from project import committed_params
from tinydata import GIT, make_tiny_repo, sh

pytestmark = pytest.mark.e2e
OUTPUT_FOLDERS = ("data", "models", "metrics", "plots")
LOSSES, AUG_NAMES, DATASET_NAMES, ARCH_NAMES = (
    ", ".join(sorted(registry)) for registry in (LOSS_REGISTRY, AUGMENTATIONS, DATASETS, ARCHS)
)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny repository after one full `dvc repro`, its results committed."""
    repo, env = make_tiny_repo(tmp_path_factory.mktemp("ran"))
    sh("dvc", "repro", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "results", cwd=repo, env=env)
    return repo, env


def snapshot(repo: Path) -> dict[str, str]:
    return {
        str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in OUTPUT_FOLDERS
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file()
    }


def set_params(repo: Path, values: dict) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for dotted, value in values.items():
        *sections, key = dotted.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def broken_mirror(repo: Path, damage: Callable[[Path], None]) -> None:
    """Point the download stage at a damaged copy of the tiny mirror."""
    mirror = Path(yaml.safe_load((repo / "params.yaml").read_text())["download"]["mirror"])
    copy = repo.parent / "broken-mirror"
    shutil.copytree(mirror, copy)
    damage(copy / "mnist")
    set_params(repo, {"download.mirror": str(copy)})


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def other_labels(folder: Path) -> None:
    """Valid idx labels, but not the ones the digests promise."""
    name = _idx_names("test", "labels")[0]
    raw = gzip.decompress((folder / name).read_bytes())
    (folder / name).write_bytes(gzip.compress(raw[:8] + bytes((b + 1) % 10 for b in raw[8:])))


def limit_file_size(limit: int) -> Callable[[], None]:
    """A kernel-enforced file size limit for the child: writes beyond it fail as on a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def flip_keeping_mtime(path: Path) -> None:
    """Invert 8 bytes in the middle of `path`, keeping its size, mode and mtime: damage DVC does not notice
    (it trusts an unchanged mtime, and a read-only cache object without looking)."""
    stat = path.stat()
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.seek(stat.st_size // 2)
        damaged = bytes(b ^ 0xFF for b in f.read(8))
        f.seek(stat.st_size // 2)
        f.write(damaged)
    path.chmod(stat.st_mode)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def cached_encoder(repo: Path) -> Path:
    """models/encoder.pt's object in the DVC cache."""
    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["train"]["outs"]
    md5 = next(out["md5"] for out in outs if out["path"] == "models/encoder.pt")
    return repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def corrupt_cached_encoder(repo: Path) -> None:
    """Flip bytes inside the weights of models/encoder.pt's object in the DVC cache (still a valid zip) and
    check it out, as switching to another commit and back would."""
    flip_keeping_mtime(cached_encoder(repo))
    (repo / "models/encoder.pt").unlink()
    subprocess.run([Path(sys.executable).parent / "dvc", "checkout", "models/encoder.pt"], cwd=repo, check=True)


def delete_encoder_and_its_cached_copy(repo: Path) -> None:
    cached_encoder(repo).unlink()
    (repo / "models/encoder.pt").unlink()


class RunsCode:
    """Pickles as a call of os.system: unpickling it runs the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def encoder_with_payload(repo: Path) -> None:
    """models/encoder.pt with its weights and a payload that would create models/code-ran if it ran."""
    saved = torch.load(repo / "models/encoder.pt", weights_only=True)
    (repo / "models/encoder.pt").unlink()
    torch.save({**saved, "extra": RunsCode(f"touch {repo / 'models/code-ran'}")}, repo / "models/encoder.pt")


def cifar_batch_with_payload(repo: Path) -> None:
    """A mirror whose CIFAR-10 archive has a data_batch_1 that would create data/code-ran if unpickled."""
    broken_mirror(repo, lambda folder: None)
    archive = repo.parent / "broken-mirror" / "cifar10" / CIFAR_ARCHIVE
    with tarfile.open(archive) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar if member.isfile()]
    payload = pickle.dumps({"data": RunsCode(f"touch {repo / 'data/code-ran'}"), "labels": [0]}, protocol=2)
    with tarfile.open(archive, "w:gz") as tar:
        for member, data in members:
            data = payload if member.name.endswith("/data_batch_1") else data
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def colon_too_many(repo: Path) -> None:
    """params.yaml's first line, `dataset: mnist`, with a colon typed at its end."""
    path = repo / "params.yaml"
    first, rest = path.read_text().split("\n", 1)
    assert first == "dataset: mnist"
    path.write_text(f"{first}:\n{rest}")


TRAIN_STAGE = [
    sys.executable,
    "stages/train.py",
    "--data",
    "data/datasets/mnist",
    "--examples",
    "data/examples.npz",
    "--model",
    "models/encoder.pt",
    "--metrics",
    "metrics/train.json",
    "--loss-csv",
    "plots/train_loss.csv",
    "--loss-png",
    "plots/train_loss.png",
    "--checkpoint",
    "models/train-checkpoint.pt",
]


@dataclass
class Case:
    name: str
    line: str  # the error line the user sees; "...": anything may stand there
    params: dict = field(default_factory=dict)
    damage: Callable[[Path], None] | None = None
    command: list[str] = field(default_factory=lambda: ["dvc", "repro"])
    env: dict = field(default_factory=dict)
    preexec: Callable[[], None] | None = None
    recover: Callable[[Path], None] | None = None  # deletes what the line says to delete, before `dvc repro`
    at_run_time: bool = False  # a param found wrong only against the data, by the stage that reads both

    @property
    def refused_before_any_stage(self) -> bool:
        """A bad param `dvc repro` meets: the check stage refuses it before DVC deletes any stage's outputs."""
        return self.command == ["dvc", "repro"] and self.line.startswith("error: params.yaml:") and not self.at_run_time


CASES = [
    Case(
        "unknown dataset",
        f"error: params.yaml: dataset='mnits' is not allowed; expected one of {DATASET_NAMES}",
        params={"dataset": "mnits"},
    ),
    Case(
        "unknown loss",
        f"error: params.yaml: loss='quadruplet' is not allowed; expected one of {LOSSES}",
        params={"loss": "quadruplet"},
    ),
    Case(
        "unknown augmentation",
        f"error: params.yaml: aug='simclar' is not allowed; expected one of {AUG_NAMES}",
        params={"aug": "simclar"},
    ),
    Case(
        "wrong type",
        "error: params.yaml: train.batch_size='big' is not allowed; expected an integer >= 1 and <= 1000000",
        params={"train.batch_size": "big"},
    ),
    Case(
        "negative size",
        "error: params.yaml: train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1 and <= 10000",
        params={"train.epochs": -1},
    ),
    Case(
        "zero size",
        "error: params.yaml: pairs.anchors_per_class=0 is not allowed; expected an integer >= 1 and <= 1000000",
        params={"pairs.anchors_per_class": 0},
    ),
    Case(
        "misspelt key",
        f"error: params.yaml: train.epoch is not a known key; known keys: {', '.join(SCHEMA['train'])}",
        params={"train.epoch": 5},
    ),
    Case(
        "option that does not fit the loss",
        "error: params.yaml: pairs.negatives='hard' mines semi-hard negatives for triplets; use it with loss=triplet",
        params={"loss": "pairwise", "pairs.negatives": "hard"},
    ),
    Case(
        "unknown arch",
        f"error: params.yaml: model.arch='resnet9000' is not allowed; expected one of {ARCH_NAMES}",
        params={"model.arch": "resnet9000"},
    ),
    Case(
        "unknown probe features",
        "error: params.yaml: probe.features='pixels' is not allowed; expected one of embedding, backbone",
        params={"probe.features": "pixels"},
    ),
    Case(
        "unknown probe protocol",
        "error: params.yaml: probe.protocol='linear' is not allowed; expected one of study, standard",
        params={"probe.protocol": "linear"},
    ),
    Case(
        "unknown baseline",
        f"error: no baseline 'pixels'; known: {', '.join(BASELINES)}",
        command=[
            sys.executable,
            "stages/baseline.py",
            "--name",
            "pixels",
            "--data",
            "data/datasets/mnist",
            "--metrics",
            "metrics/baselines/pixels.json",
        ],
    ),
    *(
        Case(
            f"patch centroids {bad!r}",
            f"error: params.yaml: patches.centroids={bad!r} is not allowed; expected an integer >= 1",
            params={"patches.centroids": bad},
        )
        for bad in (0, -1, 2.5, True, "a")
    ),
    Case(
        "patch larger than the image",
        "error: params.yaml: patches.size=29 is not allowed; expected an integer >= 1 and <= 28",
        params={"patches.size": 29},
    ),
    Case(
        "list where a number belongs",
        "error: params.yaml: train.lr=[1] is not allowed; expected 'auto' or a finite number > 0",
        params={"train.lr": [1]},
    ),
    Case(
        "infinite learning rate",
        "error: params.yaml: train.lr=inf is not allowed; expected 'auto' or a finite number > 0",
        params={"train.lr": float("inf")},
    ),
    Case(
        "probe test share above 1",
        "error: params.yaml: probe.test_size=1.5 is not allowed; expected a number strictly between 0 and 1",
        params={"probe.test_size": 1.5},
    ),
    Case(
        "probe with no neighbours",
        "error: params.yaml: probe.knn_k=0 is not allowed; expected an integer >= 1",
        params={"probe.knn_k": 0},
    ),
    Case(
        "negative seed",
        "error: params.yaml: seed=-1 is not allowed; expected an integer >= 0 and <= 4294967295",
        params={"seed": -1},
    ),
    Case(
        "seed scikit-learn cannot take",
        "error: params.yaml: seed=4294967296 is not allowed; expected an integer >= 0 and <= 4294967295",
        params={"seed": 2**32},
    ),
    Case(
        "perplexity of a billion",
        "error: params.yaml: tsne.perplexity=1000000000.0 is not allowed; expected a finite number > 0 and <= 10000",
        params={"tsne.perplexity": 1e9},
    ),
    Case(
        "batch size written 1e12 (a float)",
        "error: params.yaml: train.batch_size=1000000000000.0 is not allowed; expected an integer >= 1 and <= 1000000",
        params={"train.batch_size": 1e12},
    ),
    Case(
        "a billion epochs",
        "error: params.yaml: train.epochs=1000000000 is not allowed; expected 'auto' or an integer >= 1 and <= 10000",
        params={"train.epochs": 1_000_000_000},
    ),
    Case(
        "shift wider than the image",
        "error: params.yaml: embed.shifts=[40] is not allowed; expected a list of "
        "integers >= -27 and <= 27 (may be empty)",
        params={"embed.shifts": [40]},
    ),
    Case(
        "warm-up as long as training",
        "error: params.yaml: train.warmup_epochs=2 but training lasts only "
        "train.epochs=2, so the learning rate would never reach train.lr; use at most 1",
        params={"train.warmup_epochs": 2},
    ),
    # A stage run directly: `dvc repro` reads params.yaml first and stops with its own message, over several lines
    # ("ERROR: unable to read: 'params.yaml', YAML file structure is corrupted: ..."), which names the line too.
    Case(
        "params.yaml that is not valid YAML",
        "error: params.yaml is not valid YAML (line 1, column 15: mapping values "
        "are not allowed here); fix it or `git checkout params.yaml`",
        damage=colon_too_many,
        command=TRAIN_STAGE,
    ),
    Case(
        "mirror path that does not exist",
        "error: could not get mnist from any source (mirror: /no/such/mirror/mnist "
        "does not exist); to supply mnist offline, put the official files (...) in <mirror>/mnist/ and point the "
        "download.mirror param in params.yaml or the CONTRASTLAB_MIRROR environment variable at <mirror>",
        params={"download.mirror": "/no/such/mirror", "download.sources": ["mirror"]},
    ),
    Case(
        "truncated archive",
        "error: mnist from source 'mirror': .../broken-mirror/mnist/train-images-idx3-ubyte.gz: "
        "not a readable gzip file (...)",
        damage=lambda repo: broken_mirror(repo, lambda f: truncate(f / "train-images-idx3-ubyte.gz")),
    ),
    Case(
        "archive with the wrong content",
        "error: mnist test labels from source 'mirror' do not match the expected "
        "content digest (got sha256 ..., expected ...); the copy is corrupted or not the official data, or the "
        "digests file is wrong",
        damage=lambda repo: broken_mirror(repo, other_labels),
    ),
    Case(
        "truncated cached array",
        "error: data/datasets/mnist/train_images.npy is truncated or corrupted (...); "
        "delete it and run `dvc repro` to recompute it",
        damage=lambda repo: truncate(repo / "data/datasets/mnist/train_images.npy"),
        command=["dvc", "repro", "--single-item", "train"],
    ),
    Case(
        "damaged encoder file",
        "error: models/encoder.pt is not a readable encoder (...); delete it and run `dvc repro` to recompute it",
        damage=lambda repo: truncate(repo / "models/encoder.pt"),
        command=["dvc", "repro", "--single-item", "embed"],
    ),
    Case(
        "unreadable MLflow store",
        "error: MLflow tracking failed for mnist-triplet-simclr (store sqlite:///.../"
        "garbage.db): ... Every DVC output is intact: fix the store or start the server, then run `dvc repro` again "
        "(only `track` re-runs)",
        damage=lambda repo: (repo.parent / "garbage.db").write_bytes(b"not sqlite" * 100),
        command=["dvc", "repro", "--force", "--single-item", "track"],
        env={"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/garbage.db"},
    ),
    Case(
        "unreachable tracking server",
        "error: MLflow tracking failed for mnist-triplet-simclr (store "
        "http://127.0.0.1:9): ... Every DVC output is intact: fix the store or start the server, then run `dvc "
        "repro` again (only `track` re-runs)",
        command=["dvc", "repro", "--force", "--single-item", "track"],
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
    ),
    Case(
        "learning rate so large the loss turns NaN",
        "error: training diverged: the triplet loss became nan at epoch "
        "1, step ... (lr 1e+38, sgd); lower train.lr or change the recipe",
        params={"train.lr": 1e38},
    ),
    Case(
        "unknown device",
        "error: params.yaml: train.device='tpu' is not allowed; expected one of auto, cpu, cuda, cuda:N or mps",
        params={"train.device": "tpu"},
    ),
    Case(
        "a GPU this machine does not have",
        "error: params.yaml: train.device=cuda:99: ...",
        params={"train.device": "cuda:99"},
        at_run_time=True,
    ),
    Case(
        "fp16 on the CPU",
        "error: params.yaml: train.precision=fp16 runs on CUDA GPUs only, and this training runs on cpu; use fp32 "
        "(or bf16 where the CPU has native bf16)",
        params={"train.precision": "fp16"},
        at_run_time=True,
    ),
    Case(
        "t-SNE of more points than exist",
        "error: params.yaml: tsne.n_points=5000 but there are only 100 test embeddings; use at most 100 or 'all'",
        params={"tsne.n_points": 5000},
        at_run_time=True,
    ),
    Case(
        "probe with more neighbours than points",
        "error: params.yaml: probe.knn_k=500 but the probe fits on only 80 embeddings; use at most 80",
        params={"probe.knn_k": 500},
        at_run_time=True,
    ),
    Case(
        "disk full while training (simulated)",
        "error: cannot write models/train-checkpoint.pt: File too large "
        "(free disk space or fix permissions, then re-run; `dvc checkout` brings back the outputs `dvc repro` "
        "deleted before running the stage, `git checkout` its uncached metrics and plots)",
        command=TRAIN_STAGE,
        preexec=limit_file_size(200_000),
    ),
    Case(
        "study grid that does not exist",
        "error: params.yaml: no study grid 'mian'; known: " + ", ".join(committed_params()["study"]["grids"]),
        command=[sys.executable, "-m", "contrastlab.study", "--grid", "mian", "--results", "results"],
    ),
    Case(
        "same-size-corrupted cached array",
        "error: data/datasets/mnist/train_images.npy does not match the content "
        "digest in data/datasets/mnist/meta.json (its sha256 is ...): it changed after the download stage verified "
        "it; delete it and run `dvc repro` to recompute it",
        damage=lambda repo: flip_keeping_mtime(repo / "data/datasets/mnist/train_images.npy"),
        command=["dvc", "repro", "--force", "--single-item", "train"],
        recover=lambda repo: (repo / "data/datasets/mnist/train_images.npy").unlink(),
    ),
    Case(
        "corrupted encoder object in the DVC cache",
        "error: models/encoder.pt is damaged: its weights do not match "
        "the digest saved with them; DVC's cached copy .dvc/cache/files/md5/... is damaged too: delete both and run "
        "`dvc repro` to recompute it",
        damage=corrupt_cached_encoder,
        command=["dvc", "repro", "--force", "--single-item", "embed"],
        recover=delete_encoder_and_its_cached_copy,
    ),
    Case(
        "encoder file with a pickle payload",
        "error: models/encoder.pt holds something other than plain weights "
        f"(it refers to {os.system.__module__}.system): it was refused and nothing in it was run; delete it and run "
        "`dvc repro` to recompute it",
        damage=encoder_with_payload,
        command=["dvc", "repro", "--single-item", "embed"],
    ),
    Case(
        "CIFAR-10 batch with a pickle payload",
        "error: cifar10 from source 'mirror': .../broken-mirror/cifar10/"
        "cifar-10-python.tar.gz: data_batch_1 matches no known digest of the official file (sha256 ...); refusing to "
        "unpickle it: the archive is corrupted or not the official data, or the digests file lacks its 'files'",
        params={"dataset": "cifar10"},
        damage=cifar_batch_with_payload,
    ),
]


def matches(pattern: str, line: str) -> bool:
    """`line` equals `pattern`, where each "..." in the pattern stands for any text."""
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("...")), line) is not None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line_and_loses_nothing(ran, tmp_path, case):
    source, env = ran
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    before = snapshot(repo)
    set_params(repo, case.params)
    if case.damage:
        case.damage(repo)
    damaged = {name for name, digest in snapshot(repo).items() if before.get(name) != digest}
    env = {**env, **{k: v.format(tmp=tmp_path) for k, v in case.env.items()}}

    start = time.perf_counter()
    result = subprocess.run(case.command, cwd=repo, env=env, capture_output=True, text=True, preexec_fn=case.preexec)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert time.perf_counter() - start < 120
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and matches(case.line, errors[0]), output
    assert "Traceback" not in output
    assert not [p for p in repo.rglob("*partial*") if ".dvc" not in p.parts]

    after = snapshot(repo)
    changed = sorted(name for name in after if name not in damaged and before.get(name) != after[name])
    assert changed == []  # nothing new or half-written in place of an output
    if case.refused_before_any_stage:  # and nothing deleted either
        assert sorted(set(before) - set(after)) == []
    # DVC removes a stage's outputs before running it: the cached ones come back from the cache, the
    # small uncached metrics and plots from git, where they are versioned
    if case.recover:  # the way back the line gives
        case.recover(repo)
        sh("dvc", "repro", cwd=repo, env=env)
    sh("git", "checkout", "--", ".", cwd=repo, env=env)
    sh("dvc", "checkout", "--force", cwd=repo, env=env)
    assert snapshot(repo) == before
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env).stdout


def test_a_typo_in_dvc_exp_run_leaves_every_output_of_the_workspace_as_it_was(ran, tmp_path):
    source, env = ran
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    before = snapshot(repo)
    result = subprocess.run(
        ["dvc", "exp", "run", "-S", "aug=simclar"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]
    assert errors == [f"error: params.yaml: aug='simclar' is not allowed; expected one of {AUG_NAMES}"]
    assert snapshot(repo) == before  # the encoder, the metrics and the plots are all still there, unchanged


def test_a_second_repro_while_one_runs_stops_at_once_and_the_first_finishes_intact(ran, tmp_path):
    """DVC locks what a running stage reads and writes: a second `dvc repro` in the same workspace is refused, not
    run over the first. The first retrains the supervised baseline: seconds of work whose result is known."""
    source, env = ran
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, symlinks=True)
    before = snapshot(repo)
    first = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", "baseline@supervised"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert "Running stage 'baseline@supervised'" in first.stdout.readline()

    second = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert first.poll() is None  # refused without waiting for the first
    output = second.stdout + second.stderr
    assert second.returncode != 0 and "Traceback" not in output
    assert output.splitlines()[:2] == [
        f"ERROR: failed to reproduce 'check': '{repo}/data/params.checked' is busy, it is being blocked by:",
        f"  (PID {first.pid}): {Path(sys.executable).parent / 'dvc'} repro --force --single-item baseline@supervised",
    ]

    rest, _ = first.communicate()
    assert first.returncode == 0, rest
    assert snapshot(repo) == before
    assert not [p for p in repo.rglob("*partial*") if ".dvc" not in p.parts]
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env).stdout


def test_sigkill_while_downloading_then_repro_ends_with_the_outputs_of_an_uninterrupted_run(ran, tmp_path):
    """A first `dvc repro` killed (dvc and the stage, as a crash would) once the dataset's folder exists, before DVC
    recorded the stage: the next `dvc repro` starts over from what is left and loses nothing."""
    repo, env = make_tiny_repo(tmp_path)
    killed = subprocess.Popen(
        ["dvc", "repro"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not (repo / "data/datasets/mnist").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "dvc repro ended before the download stored data"
        time.sleep(0.001)
    os.killpg(killed.pid, signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    lock = repo / "dvc.lock"  # the check stage before it is recorded, the download not yet
    assert "download" not in (yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {})

    sh("dvc", "repro", cwd=repo, env=env)
    # training's timings and when it finished differ from run to run; the encoder itself is compared
    timed = {"metrics/train.json", "metrics/train.details.json"}
    want = {name: digest for name, digest in snapshot(ran[0]).items() if name not in timed}
    assert {name: digest for name, digest in snapshot(repo).items() if name not in timed} == want
    assert not [p for p in repo.rglob("*partial*") if ".dvc" not in p.parts]
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env).stdout
