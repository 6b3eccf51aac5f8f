"""Reading and writing the pipeline's files so that a crash, a full disk or a damaged file never
passes for a result.

Every output is written to a temporary name beside its final one and renamed over it only when
complete (a rename within a folder is atomic), so a killed stage leaves either the old file or
none, never half a file. A failed write or an unreadable input becomes one `FileError` line that
names the file and the fix; `cli.run_stage` prints it without a traceback.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from contrastlab.infra.errors import FileError

RECOMPUTE = "delete it and run `dvc repro` to recompute it"
STAMP = "%Y-%m-%dT%H:%M:%S%z"  # when something finished, in train.json and study.json: local time with its offset


def now_stamp() -> str:
    return time.strftime(STAMP)


def stamp_seconds(stamp: str) -> float:
    """A `STAMP` as Unix seconds."""
    return datetime.datetime.strptime(stamp, STAMP).timestamp()


def project_root() -> Path:
    """The repository's root: `DVC_ROOT` (set by DVC, also for experiments it runs in `.dvc/tmp/exps/...`)
    or the working directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write `path`'s content to; rename it to `path` when the block succeeds.

    The temporary name keeps the suffix, so writers that infer the format from it (matplotlib,
    numpy's .npz) behave as with the final name. On any failure the temporary file is removed and
    `path` keeps its previous content; but `dvc repro` deletes a stage's outputs before running it, so
    the failure says how to bring those back.
    """
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        os.replace(partial, path)
    except OSError as err:
        raise FileError(
            f"cannot write {path}: {err.strerror or err} (free disk space or fix permissions, then "
            "re-run; `dvc checkout` brings back the outputs `dvc repro` deleted before running the stage, "
            "`git checkout` its uncached metrics and plots)"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as partial:
        partial.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def details_path(metrics: str | Path) -> Path:
    """The sibling of a metrics file, `<name>.details.json`, for what DVC's metrics cannot hold: DVC compares numbers
    only, so text, flags and lists (when training finished, on which device, the warnings) go here."""
    metrics = Path(metrics)
    return metrics.with_name(f"{metrics.stem}.details.json")


def is_metric(value: object) -> bool:
    """A number (not a bool), or an object of numbers (accuracy per class): what DVC's metrics commands compare."""
    if isinstance(value, dict):
        return all(map(is_metric, value.values()))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def write_metrics(path: str | Path, record: dict) -> None:
    """`record`'s metrics (`is_metric`) to `path`, the rest to its `details_path` (both always written)."""
    write_json(path, {key: value for key, value in record.items() if is_metric(value)})
    write_json(details_path(path), {key: value for key, value in record.items() if not is_metric(value)})


def read_metrics(path: str | Path) -> dict:
    """A metrics file and its details as one record (as `write_metrics` was given it); a file from before the split
    holds both itself and has no details."""
    details = details_path(path)
    return {**read_json(path), **(read_json(details) if details.exists() else {})}


def write_csv(path: str | Path, header: list[str], rows: Iterable[Iterable[object]]) -> None:
    with atomic_path(path) as partial, partial.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as partial:
        np.savez(partial, **arrays)  # type: ignore[arg-type]  # mypy matches **arrays to allow_pickle: bool too


def one_line(text: object, limit: int | None = None) -> str:
    """`text` (often an exception spread over lines) as one line, cut to `limit` characters."""
    return " ".join(str(text).split())[:limit]


def _cache_object(md5: str) -> Path:
    return project_root() / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def dvc_cached_copy(path: str | Path) -> Path | None:
    """The object in DVC's cache (at its default place) that holds the version of `path` dvc.lock records,
    for a cached output or a file inside a cached folder; None for any other file."""
    try:
        relative = Path(path).resolve().relative_to(project_root()).as_posix()
        stages = yaml.safe_load((project_root() / "dvc.lock").read_text())["stages"]
        for out in (out for stage in stages.values() for out in stage.get("outs", [])):
            if relative == out["path"]:
                return _cache_object(out["md5"])
            if relative.startswith(out["path"] + "/") and out["md5"].endswith(".dir"):
                listing = json.loads(_cache_object(out["md5"]).read_text())
                inside = relative[len(out["path"]) + 1 :]
                return next(_cache_object(entry["md5"]) for entry in listing if entry["relpath"] == inside)
    except (ValueError, OSError, KeyError, TypeError, AttributeError, StopIteration, yaml.YAMLError):
        pass  # not in a DVC project, or not one of its cached outputs
    return None


def recompute_advice(path: str | Path) -> str:
    """How to get a damaged file back. `dvc repro` restores a deleted output from DVC's cache when it can, and
    DVC never re-hashes its read-only cache objects: when the cached copy is damaged too, it has to go as well."""
    cached = dvc_cached_copy(path)
    if cached is None or not cached.is_file():
        return RECOMPUTE
    with cached.open("rb") as f:
        if hashlib.file_digest(f, "md5").hexdigest() == cached.parent.name + cached.name:
            return RECOMPUTE
    return (
        f"DVC's cached copy {cached.relative_to(project_root())} is damaged too: delete both and run `dvc repro` "
        "to recompute it"
    )


@contextmanager
def _reading(path: str | Path, problem: str = "is truncated or corrupted") -> Iterator[None]:
    """Turn a missing or unreadable input into one FileError line with the way out."""
    try:
        yield
    except FileNotFoundError:
        raise FileError(f"{path} does not exist; run the stage that writes it first (dvc repro)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise FileError(f"{path} {problem} ({one_line(err)}); {recompute_advice(path)}") from None


def read_json(path: str | Path) -> dict:
    with _reading(path, "is unreadable"):
        return json.loads(Path(path).read_text())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, read now, so a truncated file fails here and names itself."""
    with _reading(path), np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def load_npy(path: str | Path, mmap: bool = False) -> np.ndarray:
    with _reading(path):
        return np.load(path, mmap_mode="r" if mmap else None)
