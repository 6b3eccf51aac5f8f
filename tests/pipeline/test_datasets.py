"""The held-out validation split: never trained on, probed instead of the test set."""

import numpy as np
import pytest

from contrastlab.infra.errors import DataError
from contrastlab.pipeline.datasets import held_out, load_evaluation, load_split, load_training


def test_the_last_images_of_each_class_are_held_out():
    labels = np.array([0, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(held_out(labels, 2), [False, False, True, False, True, True, True])
    assert not held_out(labels, 0).any()
    with pytest.raises(DataError, match=r"split.validation_per_class=3 but class 0 has only 3 training images"):
        held_out(labels, 3)


def test_training_and_validation_split_the_training_images_and_the_protocol_probes_the_test_set(tmp_path):
    labels = np.repeat(np.arange(3), 4).astype(np.uint8)
    images = np.arange(12 * 2 * 2, dtype=np.uint8).reshape(12, 2, 2)
    for split, offset in (("train", 0), ("test", 100)):
        np.save(tmp_path / f"{split}_images.npy", images + offset)
        np.save(tmp_path / f"{split}_labels.npy", labels)
    train_images, train_labels = load_training(tmp_path, 1)
    valid_images, valid_labels = load_evaluation(tmp_path, 1)
    np.testing.assert_array_equal(valid_labels, [0, 1, 2])
    np.testing.assert_array_equal(valid_images[:, 0, 0, 0], [12, 28, 44])  # image 3, 7 and 11: each class's last
    assert len(train_images) == 9 and not set(train_images[:, 0, 0, 0]) & set(valid_images[:, 0, 0, 0])
    np.testing.assert_array_equal(train_labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    for loaded, expected in ((load_training(tmp_path, 0), load_split(tmp_path, "train")),
                             (load_evaluation(tmp_path, 0), load_split(tmp_path, "test"))):
        for got, want in zip(loaded, expected):
            np.testing.assert_array_equal(got, want)
