"""Bad input loses nothing: a table of user mistakes and damaged files, each run as a user would
(mostly `dvc repro`) in a fresh copy of a tiny repository whose pipeline has already run once.

For every row: the command fails, the user sees the exact one-line error (no traceback), no
partial file is left anywhere, every output that is still in the workspace is unchanged, and after
undoing the mistake `git checkout` and `dvc checkout` bring back every output exactly (nothing was
lost or overwritten with something half-made) and `dvc status` has nothing to do.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from contrastlab.infra.params import SCHEMA
from contrastlab.methods.augmentations import AUGMENTATIONS
from contrastlab.methods.losses import LOSSES as LOSS_REGISTRY
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.download import _idx_names
from project import committed_params
from tinydata import GIT, make_tiny_repo, sh

pytestmark = pytest.mark.e2e
OUTPUT_FOLDERS = ("data", "models", "metrics", "plots")
LOSSES, AUG_NAMES, DATASET_NAMES = (", ".join(sorted(registry)) for registry in (LOSS_REGISTRY, AUGMENTATIONS, DATASETS))


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny repository after one full `dvc repro`, its results committed."""
    repo, env = make_tiny_repo(tmp_path_factory.mktemp("ran"))
    sh("dvc", "repro", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh(*GIT, "commit", "-qm", "results", cwd=repo, env=env)
    return repo, env


def snapshot(repo: Path) -> dict[str, str]:
    return {str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
            for folder in OUTPUT_FOLDERS for path in sorted((repo / folder).rglob("*")) if path.is_file()}


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


TRAIN_STAGE = [sys.executable, "stages/train.py", "--data", "data/datasets/mnist", "--examples", "data/examples.npz",
               "--model", "models/encoder.pt", "--metrics", "metrics/train.json", "--loss-csv",
               "plots/train_loss.csv", "--loss-png", "plots/train_loss.png", "--checkpoint",
               "models/train-checkpoint.pt"]


@dataclass
class Case:
    name: str
    line: str  # the error line the user sees; "...": anything may stand there
    params: dict = field(default_factory=dict)
    damage: Callable[[Path], None] | None = None
    command: list[str] = field(default_factory=lambda: ["dvc", "repro"])
    env: dict = field(default_factory=dict)
    preexec: Callable[[], None] | None = None


CASES = [
    Case("unknown dataset", f"error: params.yaml: dataset='mnits' is not allowed; expected one of {DATASET_NAMES}",
         params={"dataset": "mnits"}),
    Case("unknown loss", f"error: params.yaml: loss='quadruplet' is not allowed; expected one of {LOSSES}",
         params={"loss": "quadruplet"}),
    Case("unknown augmentation", f"error: params.yaml: aug='simclar' is not allowed; expected one of {AUG_NAMES}",
         params={"aug": "simclar"}),
    Case("wrong type", "error: params.yaml: train.batch_size='big' is not allowed; expected an integer >= 1",
         params={"train.batch_size": "big"}),
    Case("negative size", "error: params.yaml: train.epochs=-1 is not allowed; expected 'auto' or an integer >= 1",
         params={"train.epochs": -1}),
    Case("zero size", "error: params.yaml: pairs.anchors_per_class=0 is not allowed; expected an integer >= 1",
         params={"pairs.anchors_per_class": 0}),
    Case("misspelt key", f"error: params.yaml: train.epoch is not a known key; known keys: {', '.join(SCHEMA['train'])}",
         params={"train.epoch": 5}),
    Case("option that does not fit the loss", "error: params.yaml: pairs.negatives='hard' mines semi-hard negatives "
         "for triplets; use it with loss=triplet", params={"loss": "pairwise", "pairs.negatives": "hard"}),
    Case("mirror path that does not exist", "error: could not get mnist from any source (mirror: /no/such/mirror/mnist "
         "does not exist); to supply mnist offline, put the official files (...) in <mirror>/mnist/ and point the "
         "download.mirror param in params.yaml or the CONTRASTLAB_MIRROR environment variable at <mirror>",
         params={"download.mirror": "/no/such/mirror", "download.sources": ["mirror"]}),
    Case("truncated archive", "error: mnist from source 'mirror': .../broken-mirror/mnist/train-images-idx3-ubyte.gz: "
         "not a readable gzip file (...)",
         damage=lambda repo: broken_mirror(repo, lambda f: truncate(f / "train-images-idx3-ubyte.gz"))),
    Case("archive with the wrong content", "error: mnist test labels from source 'mirror' do not match the expected "
         "content digest (got sha256 ..., expected ...); the copy is corrupted or not the official data, or the "
         "digests file is wrong", damage=lambda repo: broken_mirror(repo, other_labels)),
    Case("truncated cached array", "error: data/datasets/mnist/train_images.npy is truncated or corrupted (...); "
         "delete it and run `dvc repro` to recompute it",
         damage=lambda repo: truncate(repo / "data/datasets/mnist/train_images.npy"),
         command=["dvc", "repro", "--single-item", "train"]),
    Case("damaged encoder file", "error: models/encoder.pt is not a readable encoder (...); delete it and run "
         "`dvc repro` to recompute it", damage=lambda repo: truncate(repo / "models/encoder.pt"),
         command=["dvc", "repro", "--single-item", "embed"]),
    Case("unreadable MLflow store", "error: MLflow tracking failed for mnist-triplet-simclr (store sqlite:///.../"
         "garbage.db): ... Every DVC output is intact: fix the store or start the server, then run `dvc repro` again "
         "(only `track` re-runs)", damage=lambda repo: (repo.parent / "garbage.db").write_bytes(b"not sqlite" * 100),
         command=["dvc", "repro", "--force", "--single-item", "track"], env={"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/garbage.db"}),
    Case("unreachable tracking server", "error: MLflow tracking failed for mnist-triplet-simclr (store "
         "http://127.0.0.1:9): ... Every DVC output is intact: fix the store or start the server, then run `dvc "
         "repro` again (only `track` re-runs)", command=["dvc", "repro", "--force", "--single-item", "track"],
         env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
    Case("learning rate so large the loss turns NaN", "error: training diverged: the triplet loss became nan at epoch "
         "1, step ... (lr 1e+38, sgd); lower train.lr or change the recipe", params={"train.lr": 1e38}),
    Case("t-SNE of more points than exist", "error: params.yaml: tsne.n_points=5000 but there are only 100 test "
         "embeddings; use at most 100 or 'all'", params={"tsne.n_points": 5000}),
    Case("probe with more neighbours than points", "error: params.yaml: probe.knn_k=500 but the probe fits on only 80 "
         "embeddings; use at most 80", params={"probe.knn_k": 500}),
    Case("disk full while training (simulated)", "error: cannot write models/train-checkpoint.pt: File too large "
         "(free disk space or fix permissions, then re-run; the previous file, if any, is unchanged)",
         command=TRAIN_STAGE, preexec=limit_file_size(200_000)),
    Case("study grid that does not exist", "error: params.yaml: no study grid 'mian'; known: "
         + ", ".join(committed_params()["study"]["grids"]),
         command=[sys.executable, "-m", "contrastlab.study", "--grid", "mian", "--results", "results"]),
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
    # DVC removes a stage's outputs before running it: the cached ones come back from the cache, the
    # small uncached metrics and plots from git, where they are versioned
    sh("git", "checkout", "--", ".", cwd=repo, env=env)
    sh("dvc", "checkout", "--force", cwd=repo, env=env)
    assert snapshot(repo) == before
    assert "up to date" in sh("dvc", "status", cwd=repo, env=env).stdout
