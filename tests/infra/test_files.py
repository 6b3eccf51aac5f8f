import errno
import json

import numpy as np
import pytest

from contrastlab.infra import files
from contrastlab.infra.errors import FileError
from contrastlab.infra.files import atomic_path, load_npy, load_npz, read_json, save_npz, write_csv, write_json


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
    assert str(caught.value) == (f"cannot write {tmp_path / 'a.json'}: No space left on device (free disk space or "
                                 "fix permissions, then re-run; the previous file, if any, is unchanged)")
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
