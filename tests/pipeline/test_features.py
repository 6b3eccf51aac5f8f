import numpy as np
import pytest

from contrastlab.infra.errors import FileError
from contrastlab.pipeline.features import (
    collapse_warning,
    shifted_name,
    stored_features,
    stored_training_features,
    training_name,
)


def test_each_representation_comes_with_its_own_shifted_copies_only():
    a, b, c, d, e = (np.full((2, 3), value) for value in range(5))
    saved = {
        "labels": np.arange(2),
        "embedding": a,
        "backbone": b,
        shifted_name("embedding", 3): c,
        shifted_name("embedding", -6): d,
        shifted_name("backbone", 3): e,
    }
    assert shifted_name("backbone", 3) == "backbone_shift+3" and shifted_name("embedding", -6) == "embedding_shift-6"
    features, shifted = stored_features(saved, "embedding")
    assert features is a and shifted.keys() == {"3", "-6"} and shifted["3"] is c and shifted["-6"] is d
    features, shifted = stored_features(saved, "backbone")
    assert features is b and list(shifted) == ["3"] and shifted["3"] is e


def test_a_file_from_before_the_backbone_was_kept_is_named_with_the_advice():
    with pytest.raises(
        FileError,
        match=r"holds no 'backbone' features \(only embedding, labels\): it predates them; "
        r"delete it and run `dvc repro`",
    ):
        stored_features({"embedding": np.zeros((2, 3)), "labels": np.arange(2)}, "backbone")


def test_the_training_images_features_come_with_their_labels_and_stay_out_of_the_evaluation_ones():
    a, b, c = (np.full((2, 3), value) for value in range(3))
    saved = {
        "labels": np.arange(2),
        "embedding": a,
        training_name("embedding"): b,
        training_name("backbone"): c,
        training_name("labels"): np.arange(4),
    }
    assert (training_name("backbone"), training_name("labels")) == ("train_backbone", "train_labels")
    features, labels = stored_training_features(saved, "embedding")
    assert features is b and labels is saved["train_labels"]
    assert stored_training_features(saved, "backbone")[0] is c
    features, shifted = stored_features(saved, "embedding")
    assert features is a and shifted == {}  # the training images' are neither the evaluation images' nor a shifted copy


def test_a_file_embedded_for_the_study_protocol_is_refused_by_the_standard_one_with_the_advice():
    with pytest.raises(
        FileError,
        match=r"^the embed stage's file holds no training images' 'backbone' features, which "
        r"probe.protocol=standard fits the probe on: it was embedded for the study "
        r"protocol; re-run the embed stage: delete it and run `dvc repro` to recompute "
        r"it$",
    ):
        stored_training_features({"backbone": np.zeros((2, 3)), "labels": np.arange(2)}, "backbone")


def test_all_zero_features_collapsed():
    assert collapse_warning(np.zeros((5, 3), dtype=np.float32), "embedding") == (
        "the embedding features collapsed: all 5 rows are 0; lower train.lr or change the recipe"
    )


def test_identical_rows_of_1e8_collapsed_and_their_size_is_named():
    rows = np.tile(np.array([3e8, -4e8], dtype=np.float32), (6, 1))  # each row's norm: 5e8
    assert collapse_warning(rows, "backbone") == (
        "the backbone features collapsed: all 6 rows are the same point "
        "(spread 0 of their norm 5e+08); lower train.lr or change the recipe"
    )


def test_rows_within_a_millionth_of_their_norm_are_one_point():
    # rows (3 +- d, -4): spread around the mean d, norm sqrt(25 + d^2) ~ 5, so collapsed iff d <= 5e-6
    def rows(d):
        return np.array([[3 + d, -4.0], [3 - d, -4.0]] * 4)

    assert collapse_warning(rows(4e-6), "embedding") == (
        "the embedding features collapsed: all 8 rows are the same "
        "point (spread 8e-07 of their norm 5); lower train.lr or "
        "change the recipe"
    )
    assert collapse_warning(rows(6e-6), "embedding") is None


def test_healthy_features_and_a_single_row_are_not_collapsed():
    rng = np.random.default_rng(0)
    assert collapse_warning(rng.normal(0, 1, (100, 32)), "embedding") is None
    # 1e8 everywhere, 1e3 apart: spread sqrt(256) * 1e3 is 1e-5 of the norm sqrt(256) * 1e8, above 1e-6
    assert collapse_warning(1e8 + rng.normal(0, 1e3, (100, 256)), "backbone") is None
    assert collapse_warning(np.ones((1, 4)), "embedding") is None  # one row: nothing to tell apart
