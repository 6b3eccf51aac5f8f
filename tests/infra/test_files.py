import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from contrastlab.infra import files
from contrastlab.infra.errors import FileError
from contrastlab.infra.files import (
    RECOMPUTE,
    atomic_path,
    details_path,
    dvc_cached_copy,
    load_npy,
    load_npz,
    read_json,
    read_metrics,
    recompute_advice,
    save_npz,
    write_csv,
    write_json,
    write_metrics,
)


def test_writes_land_complete_and_leave_no_temporary_file(tmp_path):
    write_json(tmp_path / "m" / "a.json", {"top1": 0.5})
    write_csv(tmp_path / "a.csv", ["epoch", "loss"], [(1, 0.5), (2, 0.25)])
    save_npz(tmp_path / "a.npz", x=np.arange(3))
    assert read_json(tmp_path / "m" / "a.json") == {"top1": 0.5}
    assert (tmp_path / "a.csv").read_text().splitlines() == ["epoch,loss", "1,0.5", "2,0.25"]
    assert load_npz(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.csv", "a.json", "a.npz", "m"]


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path):
    write_json(tmp_path / "a.json", {"old": True})
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "a.json") as partial:
        partial.write_text('{"new": tr')  # half written when the process is stopped
        raise KeyboardInterrupt
    assert json.loads((tmp_path / "a.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_disk_full_is_one_line_and_keeps_the_previous_file(tmp_path, monkeypatch):
    write_json(tmp_path / "a.json", {"old": True})

    def full_disk(self, text):
        self.open("w").write(text[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.Path, "write_text", full_disk)
    with pytest.raises(FileError) as caught:
        write_json(tmp_path / "a.json", {"new": True})
    assert str(caught.value) == (
        f"cannot write {tmp_path / 'a.json'}: No space left on device (free disk space or fix permissions, then "
        "re-run; `dvc checkout` brings back the outputs `dvc repro` deleted before running the stage, `git checkout` "
        "its uncached metrics and plots)"
    )
    monkeypatch.undo()
    assert json.loads((tmp_path / "a.json").read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_truncated_or_missing_arrays_name_the_file_and_the_fix(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(1000))
    np.save(tmp_path / "b.npy", np.arange(1000))
    for name in ("a.npz", "b.npy"):
        raw = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FileError, match=r"a\.npz is truncated or corrupted \(.*\); delete it and run `dvc repro`"):
        load_npz(tmp_path / "a.npz")
    with pytest.raises(FileError, match=r"b\.npy is truncated or corrupted \(.*\); delete it and run `dvc repro`"):
        load_npy(tmp_path / "b.npy", mmap=True)
    with pytest.raises(FileError, match=r"c\.npz does not exist; run the stage that writes it first"):
        load_npz(tmp_path / "c.npz")
    (tmp_path / "d.json").write_text("{")
    with pytest.raises(FileError, match=r"d\.json is unreadable"):
        read_json(tmp_path / "d.json")


def cache(root: Path, content: bytes, suffix: str = "") -> str:
    """Store `content` as DVC 3 does, read-only, in .dvc/cache/files/md5/<2 hex>/<30 hex><suffix> (".dir" for
    a folder's listing); return its name in dvc.lock."""
    md5 = hashlib.md5(content).hexdigest() + suffix
    path = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(0o444)
    return md5


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A DVC project whose dvc.lock records a cached file, a cached folder and an uncached metric."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    listing = [{"md5": cache(tmp_path, b"pixels"), "relpath": "train_images.npy"}]
    (tmp_path / "dvc.lock").write_text(
        json.dumps(
            {
                "schema": "2.0",
                "stages": {
                    "download": {
                        "outs": [{"path": "data/mnist", "md5": cache(tmp_path, json.dumps(listing).encode(), ".dir")}]
                    },
                    "train": {
                        "outs": [
                            {"path": "models/encoder.pt", "md5": cache(tmp_path, b"weights")},
                            {"path": "metrics/train.json", "md5": "0" * 32},
                        ]
                    },
                },
            }
        )
    )
    return tmp_path


def test_dvc_cached_copy_finds_the_object_of_a_file_or_of_a_file_in_a_folder(project):
    md5 = hashlib.md5(b"weights").hexdigest()
    assert dvc_cached_copy(project / "models/encoder.pt") == project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
    assert dvc_cached_copy(project / "data/mnist/train_images.npy").read_bytes() == b"pixels"
    assert dvc_cached_copy(project / "data/mnist/test_images.npy") is None  # not in the folder's listing
    assert dvc_cached_copy(project / "params.yaml") is None
    assert dvc_cached_copy(project.parent / "elsewhere.pt") is None


def test_a_damaged_cached_copy_has_to_go_too(project):
    assert recompute_advice(project / "models/encoder.pt") == RECOMPUTE  # the cached copy is intact
    assert recompute_advice(project / "metrics/train.json") == RECOMPUTE  # uncached: no object
    damaged = dvc_cached_copy(project / "data/mnist/train_images.npy")
    damaged.chmod(0o644)
    damaged.write_bytes(b"pixelz")
    damaged.chmod(0o444)  # as DVC left it: read-only, so DVC never hashes it again
    assert recompute_advice(project / "data/mnist/train_images.npy") == (
        f"DVC's cached copy {damaged.relative_to(project)} is damaged too: delete both and run `dvc repro` to "
        "recompute it"
    )


def test_outside_a_dvc_project_the_advice_is_to_recompute(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert recompute_advice(tmp_path / "models/encoder.pt") == RECOMPUTE


def test_metrics_keep_the_numbers_and_their_details_file_the_rest(tmp_path):
    record = {
        "top1": 0.5,
        "epochs": 3,
        "per_class": {"cat": 0.25, "dog": 0.75},
        "shifted_top1": {},
        "converged": True,  # a bool is not a number to DVC's metrics
        "finished": "2026-12-07T10:00:00+0000",
        "warnings": ["the probe did not converge"],
        "mixed": {"cat": 0.25, "note": "text"},
    }
    write_metrics(tmp_path / "probe.json", record)
    assert json.loads((tmp_path / "probe.json").read_text()) == {
        "top1": 0.5,
        "epochs": 3,
        "per_class": {"cat": 0.25, "dog": 0.75},
        "shifted_top1": {},
    }
    assert details_path(tmp_path / "probe.json") == tmp_path / "probe.details.json"
    assert json.loads((tmp_path / "probe.details.json").read_text()) == {
        "converged": True,
        "finished": "2026-12-07T10:00:00+0000",
        "warnings": ["the probe did not converge"],
        "mixed": {"cat": 0.25, "note": "text"},
    }
    assert read_metrics(tmp_path / "probe.json") == record


def test_a_metrics_file_from_before_the_details_is_read_whole(tmp_path):
    (tmp_path / "train.json").write_text('{"train_time_s": 12.5, "finished": "2026-12-07T10:00:00+0000"}')
    assert read_metrics(tmp_path / "train.json") == {"train_time_s": 12.5, "finished": "2026-12-07T10:00:00+0000"}
