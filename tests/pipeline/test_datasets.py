"""Loading a dataset folder: the arrays are checked against meta.json's digests, and the held-out
validation split is never trained on, probed instead of the test set."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from contrastlab.infra.errors import DataError, FileError
from contrastlab.pipeline import datasets
from contrastlab.pipeline.datasets import held_out, load_evaluation, load_split, load_training


def write_folder(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """What `fetch` stores: the arrays, and meta.json with the sha256 of each array's bytes."""
    for split, (images, labels) in splits.items():
        np.save(folder / f"{split}_images.npy", images)
        np.save(folder / f"{split}_labels.npy", labels)
    digests = {
        split: {
            "images": hashlib.sha256(images.tobytes()).hexdigest(),
            "labels": hashlib.sha256(labels.tobytes()).hexdigest(),
        }
        for split, (images, labels) in splits.items()
    }
    (folder / "meta.json").write_text(json.dumps({"digests": digests}))


def flip_in_place(path: Path, offset: int) -> None:
    """Invert one byte, keeping the file's size and mtime: damage DVC does not notice."""
    stat = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([255 - byte]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


TINY = {
    "train": (np.arange(24, dtype=np.uint8).reshape(6, 2, 2), np.array([0, 1, 2, 0, 1, 2], np.uint8)),
    "test": (np.full((3, 2, 2), 7, np.uint8), np.array([2, 1, 0], np.uint8)),
}


def test_the_last_images_of_each_class_are_held_out():
    labels = np.array([0, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(held_out(labels, 2), [False, False, True, False, True, True, True])
    assert not held_out(labels, 0).any()
    with pytest.raises(DataError, match=r"split.validation_per_class=3 but class 0 has only 3 training images"):
        held_out(labels, 3)


def test_training_and_validation_split_the_training_images_and_the_protocol_probes_the_test_set(tmp_path):
    labels = np.repeat(np.arange(3), 4).astype(np.uint8)
    images = np.arange(12 * 2 * 2, dtype=np.uint8).reshape(12, 2, 2)
    write_folder(tmp_path, {"train": (images, labels), "test": (images + 100, labels)})
    train_images, train_labels = load_training(tmp_path, 1)
    valid_images, valid_labels = load_evaluation(tmp_path, 1)
    np.testing.assert_array_equal(valid_labels, [0, 1, 2])
    np.testing.assert_array_equal(valid_images[:, 0, 0, 0], [12, 28, 44])  # image 3, 7 and 11: each class's last
    assert len(train_images) == 9 and not set(train_images[:, 0, 0, 0]) & set(valid_images[:, 0, 0, 0])
    np.testing.assert_array_equal(train_labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    for loaded, expected in (
        (load_training(tmp_path, 0), load_split(tmp_path, "train")),
        (load_evaluation(tmp_path, 0), load_split(tmp_path, "test")),
    ):
        for got, want in zip(loaded, expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_an_array_damaged_in_place_is_named_in_one_line_with_the_way_back(tmp_path):
    write_folder(tmp_path, TINY)
    path = tmp_path / "train_images.npy"
    flip_in_place(path, path.stat().st_size - 1)  # the last pixel: 23 becomes 232
    damaged = np.arange(24, dtype=np.uint8)
    damaged[-1] = 232
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, "train")
    assert str(caught.value) == (
        f"{path} does not match the content digest in {tmp_path / 'meta.json'} (its sha256 is "
        f"{hashlib.sha256(damaged.tobytes()).hexdigest()}): it changed after the download stage verified it; delete "
        "it and run `dvc repro` to recompute it"
    )
    load_split(tmp_path, "test")  # the other split is intact


def test_damaged_labels_are_caught_too(tmp_path):
    write_folder(tmp_path, TINY)
    flip_in_place(tmp_path / "test_labels.npy", (tmp_path / "test_labels.npy").stat().st_size - 3)
    with pytest.raises(DataError, match=r"test_labels\.npy does not match the content digest"):
        load_evaluation(tmp_path, 0)


def test_a_truncated_array_is_one_line_too(tmp_path):
    write_folder(tmp_path, TINY)
    path = tmp_path / "train_images.npy"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(FileError, match=r"train_images\.npy is truncated or corrupted \(.*\); delete it and run"):
        load_split(tmp_path, "train")


def test_meta_json_must_hold_the_digests(tmp_path):
    write_folder(tmp_path, TINY)
    (tmp_path / "meta.json").write_text(json.dumps({"digests": {"test": {}}}))
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, "train")
    assert str(caught.value) == (
        f"{tmp_path / 'meta.json'} lacks the content digests of the train arrays; delete "
        "it and run `dvc repro` to recompute it"
    )
    (tmp_path / "meta.json").unlink()
    with pytest.raises(DataError, match=r"meta\.json does not exist; run the download stage first"):
        load_split(tmp_path, "train")


def test_each_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    hashed = []
    monkeypatch.setattr(datasets, "content_digest", lambda a: hashed.append(a.shape) or hashlib.sha256(a).hexdigest())
    write_folder(tmp_path, TINY)
    load_training(tmp_path, 1)
    load_evaluation(tmp_path, 1)  # the training split again: already verified
    assert hashed == [(6, 2, 2), (6,)]
    write_folder(tmp_path, {"train": (TINY["train"][0] + 1, TINY["train"][1])})  # new versions of the files
    for name in ("train_images.npy", "train_labels.npy"):  # a rewrite in the same clock tick keeps the mtime
        os.utime(tmp_path / name, ns=(0, (tmp_path / name).stat().st_mtime_ns + 10**9))
    load_split(tmp_path, "train")
    assert hashed == [(6, 2, 2), (6,), (6, 2, 2), (6,)]
