import numpy as np
import pytest

from contrastlab.infra.errors import DataError
from contrastlab.pipeline.examples import anchors_and_negatives, build, false_negative_rate

LABELS = np.repeat(np.arange(10), 8)[np.random.default_rng(1).permutation(80)]


def test_anchors_are_the_first_images_of_each_class():
    anchor, _ = anchors_and_negatives(LABELS, 3, seed=0)
    for c in range(10):
        assert list(anchor[LABELS[anchor] == c]) == list(np.flatnonzero(LABELS == c)[:3])


def test_no_negative_shares_its_anchors_class_and_counts_per_class():
    anchor, negative = anchors_and_negatives(LABELS, 5, seed=0)
    assert len(anchor) == len(negative) == 50
    assert np.all(LABELS[anchor] != LABELS[negative])
    assert np.bincount(LABELS[anchor]).tolist() == [5] * 10


def test_same_seed_same_arrays_other_seed_other_negatives():
    a = anchors_and_negatives(LABELS, 5, seed=3)
    b = anchors_and_negatives(LABELS, 5, seed=3)
    c = anchors_and_negatives(LABELS, 5, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_triplets_augment_only_the_positive_copy_of_the_anchor():
    t = build(LABELS, "triplets", 5, seed=0)
    assert t["members"].shape == (50, 3)
    assert np.array_equal(t["members"][:, 0], t["members"][:, 1])
    assert t["augmented"].tolist() == [[False, True, False]] * 50


def test_pairs_are_half_positive_half_negative():
    p = build(LABELS, "pairs", 5, seed=0)
    assert p["members"].shape == (100, 2)
    positive = p["target"] == 1
    assert positive.sum() == 50 and (p["target"] == -1).sum() == 50
    assert np.array_equal(p["members"][positive, 0], p["members"][positive, 1])
    assert np.all(LABELS[p["members"][~positive, 0]] != LABELS[p["members"][~positive, 1]])
    assert np.array_equal(p["augmented"][:, 1], positive) and not p["augmented"][:, 0].any()


def test_too_many_anchors_is_a_clear_error():
    with pytest.raises(DataError, match="anchors_per_class=9 but class"):
        anchors_and_negatives(LABELS, 9, seed=0)


def test_label_aware_negatives_have_no_false_negatives():
    t = build(LABELS, "triplets", 5, seed=0)
    assert np.array_equal(t["labels"], LABELS[t["members"]])
    assert false_negative_rate(t) == 0.0


def test_random_negatives_ignore_labels_and_never_pick_the_anchor_itself():
    labels = np.repeat(np.arange(10), 400)
    anchor, negative = anchors_and_negatives(labels, 300, seed=0, negatives="random")
    assert np.all(anchor != negative)
    t = build(labels, "triplets", 300, seed=0, negatives="random")
    # about 1 in 10 negatives shares the anchor's class (399 of the 3,999 other images)
    assert 0.08 < false_negative_rate(t) < 0.12
    assert false_negative_rate(t) == np.mean(labels[t["members"][:, 2]] == labels[t["members"][:, 0]])


def test_views_augment_both_members_and_count_in_batch_false_negatives():
    v = build(LABELS, "views", 5, seed=0)
    assert v["members"].shape == (50, 2) and v["augmented"].all()
    assert np.array_equal(v["members"][:, 0], v["members"][:, 1])
    # 10 classes x 5 anchors: another anchor shares the class with probability 4/49
    assert false_negative_rate(v) == pytest.approx(10 * 5 * 4 / (50 * 49))


def test_augment_anchor_marks_the_anchor_as_a_view_too():
    t = build(LABELS, "triplets", 5, seed=0, augment_anchor=True)
    assert t["augmented"].tolist() == [[True, True, False]] * 50


def test_the_negatives_mode_is_recorded_so_that_training_knows_whether_to_mine():
    # which modes fit which loss is checked with the params (tests/infra/test_params.py)
    assert str(build(LABELS, "triplets", 5, seed=0, negatives="hard")["negatives"]) == "hard"
    assert str(build(LABELS, "triplets", 5, seed=0)["negatives"]) == "label_aware"
