import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from contrastlab.infra.errors import ParamError
from contrastlab.pipeline.probe import (
    WIDE_FEATURES,
    WIDE_TOL,
    LBFGSLogisticRegression,
    at_chance,
    linear_probe,
    probe,
    summary,
)


def rng(seed: int = 0) -> np.random.Generator:
    """Each test's own data, the same whichever tests ran before it."""
    return np.random.default_rng(seed)


LABELS = np.repeat(np.arange(10), 100)


def score(embeddings):
    return probe(embeddings, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0)


def test_perfectly_separable_embeddings_score_one():
    embeddings = np.eye(10)[LABELS] * 5 + rng().normal(0, 0.01, (1000, 10))
    s = score(embeddings)
    assert s["top1"] == 1.0 and s["top3"] == 1.0 and s["knn"] == 1.0
    assert s["per_class"] == [1.0] * 10


def test_random_embeddings_score_about_chance():
    s = score(rng().normal(size=(1000, 32)))
    assert 0.03 < s["top1"] < 0.2
    assert 0.15 < s["top3"] < 0.45  # chance for top-3 is 0.3


def test_split_is_stratified_and_confusion_matches_predictions():
    s = score(rng().normal(size=(1000, 32)))
    assert np.bincount(s["y_true"]).tolist() == [20] * 10  # 20% of 100 per class
    assert s["confusion"].sum() == 200
    assert np.trace(s["confusion"]) == np.sum(s["y_true"] == s["y_pred"])


def test_top1_and_top3_come_from_one_classifier():
    # top-3 >= top-1 always holds for one classifier; two different classifiers could break it.
    for seed in range(3):
        s = probe(
            rng(seed).normal(size=(1000, 8)) + LABELS[:, None] * 0.1,
            LABELS,
            test_size=0.2,
            knn_k=5,
            max_iter=200,
            seed=seed,
        )
        assert s["top3"] >= s["top1"]


def test_shifted_embeddings_are_scored_by_the_classifier_fitted_on_the_unshifted_ones():
    clean = np.eye(10)[LABELS] * 5 + rng().normal(0, 0.01, (1000, 10))
    scrambled = np.eye(10)[(LABELS + 1) % 10] * 5  # every image now looks like the next class
    s = probe(clean, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0, shifted={"same": clean, "+1": scrambled})
    assert s["shifted_top1"] == {"same": 1.0, "+1": 0.0}
    assert s["top1"] == score(clean)["top1"]  # the unshifted scores do not change


@pytest.mark.cpu_sensitive  # equal predictions from differently rounded inputs
def test_standardize_ignores_the_embeddings_scale_and_leaves_knn_alone():
    # classes 0.2-0.8 apart along 8 noisy coordinates: C=1 fits them; a thousand times smaller, it underfits
    embeddings = rng().normal(size=(1000, 8)) + LABELS[:, None] * np.linspace(0.2, 0.8, 8)
    tiny = embeddings / 1000
    plain = probe(tiny, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0)
    scaled = probe(tiny, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0, standardize=True)
    assert scaled["top1"] > plain["top1"] + 0.2
    assert (
        scaled["top1"]
        == probe(embeddings, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0, standardize=True)["top1"]
    )
    assert plain["knn"] == scaled["knn"]  # only the linear probe is standardised


@pytest.mark.cpu_sensitive  # equal predictions from differently rounded inputs
def test_standardize_learns_mean_and_deviation_from_the_fitting_split_only():
    # the held-out rows are spread wide: a deviation taken over all rows would shrink the fitting rows
    # until the probe's penalty flattens them (as in the test above)
    embeddings = rng().normal(size=(1000, 8)) + LABELS[:, None] * np.linspace(0.2, 0.8, 8)
    scored = _scored_rows()
    embeddings[scored] *= 1000
    fit = np.setdiff1d(np.arange(1000), scored)
    by_hand = (embeddings - embeddings[fit].mean(0)) / embeddings[fit].std(0)
    over_all = (embeddings - embeddings.mean(0)) / embeddings.std(0)
    scaled = probe(embeddings, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0, standardize=True)
    assert np.array_equal(
        scaled["y_pred"], probe(by_hand, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0)["y_pred"]
    )
    assert not np.array_equal(
        scaled["y_pred"], probe(over_all, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=0)["y_pred"]
    )


def _scored_rows():
    """The held-out rows of `probe`'s split, drawn here the same way."""
    return train_test_split(np.arange(1000), test_size=0.2, stratify=LABELS, random_state=0)[1]


def test_a_split_too_small_to_hold_every_class_is_one_line_naming_the_fix():
    labels = np.repeat(np.arange(10), 2)  # 20 images: 20% scores 4, fewer than the 10 classes
    with pytest.raises(
        ParamError,
        match=r"^params.yaml: probe.test_size=0.2 splits 20 images into 16 to fit and 4 to "
        r"score, but each part needs one of each of the 10 classes; probe more images",
    ):
        probe(np.zeros((20, 3)), labels, test_size=0.2, knn_k=1, max_iter=10, seed=0)


def penalised_gradient(coef, intercept, x, y):
    """The gradient of the probe's objective at these weights, by hand: the multinomial log loss summed over
    the rows (times C = 1) plus half the squared weights; zero at the optimum."""
    logits = x @ coef.T + intercept
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(p.shape[1])[y]
    return np.concatenate([(x.T @ residual + coef.T).ravel(), residual.sum(0)])


def largest_gradient(classifier, x, y):
    return np.abs(penalised_gradient(classifier.coef_, classifier.intercept_, x, y)).max()


@pytest.mark.cpu_sensitive
def test_the_probe_is_solved_to_its_optimum_not_to_where_a_loose_tolerance_stops():
    # where an iterative solver stops short of the optimum depends on rounding, i.e. on the CPU: measured on
    # a CIFAR-10 encoder's features, scikit-learn's default (lbfgs, tol 1e-4) changed 5 of 2,000 predictions
    # when the features moved by float32 rounding; at the optimum none changed. The gradient is judged against
    # its size at zero weights (232-387 on these data), since how far below PROBE_TOL Newton's last step lands
    # is itself rounding: the solver stops once the row-averaged gradient is <= 1e-10, so the summed one is
    # <= 1000 * 1e-10 = 1e-7 here, a 4e-10 fraction at most (measured 1e-14 to 1.2e-10 over five data seeds
    # on an AVX-512 CPU; an AVX2 CPU left 1.8e-8, in range). lbfgs leaves 2e-4 to 4e-4 of it.
    data = rng()
    x = data.normal(size=(1000, 20)) + LABELS[:, None] * data.normal(0, 0.3, 20)
    solved = linear_probe(100).fit(x, LABELS)
    loose = LogisticRegression(max_iter=1000).fit(x, LABELS)
    at_zero = np.abs(penalised_gradient(np.zeros((10, 20)), np.zeros(10), x, LABELS)).max()
    assert largest_gradient(solved, x, LABELS) / at_zero < 1e-9
    assert largest_gradient(loose, x, LABELS) / at_zero > 1e-5


def test_the_wide_features_solver_reaches_the_optimum_newton_cg_reaches():
    # the same objective (scikit-learn's, summed here: its row-averaged gradient stops at <= WIDE_TOL)
    x = rng().normal(size=(1000, 20)) + LABELS[:, None] * rng(1).normal(0, 0.3, 20)
    wide, newton = LBFGSLogisticRegression().fit(x, LABELS), linear_probe(100).fit(x, LABELS)
    assert largest_gradient(wide, x, LABELS) <= len(x) * WIDE_TOL
    centred = [c.coef_ - c.coef_.mean(0) for c in (wide, newton)]  # the multinomial weights' free shift
    np.testing.assert_allclose(*centred, atol=1e-5 * np.abs(centred[1]).max())
    np.testing.assert_array_equal(wide.predict(x), newton.predict(x))
    np.testing.assert_allclose(wide.predict_proba(x), newton.predict_proba(x), atol=1e-5)
    assert wide.score(x, LABELS) == newton.score(x, LABELS)


def test_features_wider_than_newton_cg_affords_take_l_bfgs_which_says_when_it_stops_short():
    assert isinstance(linear_probe(100, WIDE_FEATURES + 1), LBFGSLogisticRegression)
    assert isinstance(linear_probe(100, WIDE_FEATURES), LogisticRegression)
    with pytest.warns(ConvergenceWarning, match="L-BFGS stopped short of gradient 1e-06 after 2 steps"):
        LBFGSLogisticRegression(max_iter=2).fit(rng().normal(size=(1000, 20)), LABELS)


def test_a_probe_stopped_before_its_optimum_says_so():
    features = rng().normal(size=(1000, 400)) + LABELS[:, None] * 0.05
    s = probe(features, LABELS, test_size=0.2, knn_k=5, max_iter=3, seed=0)
    assert not s["converged"]
    assert "the linear probe did not converge in probe.max_iter=3 steps; raise probe.max_iter" in s["warnings"]


def test_chance_level_is_within_two_standard_errors_of_one_over_the_classes():
    # 200 scored images, 10 classes: chance 0.1, two standard errors 2 * sqrt(0.1 * 0.9 / 200) = 0.0424
    assert at_chance(0.142, 200, 10) and not at_chance(0.143, 200, 10)
    s = score(rng().normal(size=(1000, 4)))  # features that know nothing of the labels
    assert s["top1"] < 0.143
    assert any("at chance level" in warning for warning in s["warnings"])


def one_hot(labels, scale=5.0):
    """Each class at its own corner, a little noise: any linear probe or kNN tells them apart perfectly."""
    return np.eye(10)[labels] * scale + rng(1).normal(0, 0.01, (len(labels), 10))


TRAIN_LABELS = np.repeat(np.arange(10), 50)  # 500 training images; the 1,000 of LABELS are the evaluation images


TRAINING = (one_hot(TRAIN_LABELS), TRAIN_LABELS)


def standard(evaluation, *, seed=0, test_size=0.2, knn_k=30, training=TRAINING, **more):
    return probe(
        evaluation,
        LABELS,
        test_size=test_size,
        knn_k=knn_k,
        max_iter=1000,
        seed=seed,
        protocol="standard",
        training=training,
        **more,
    )


def test_the_standard_protocol_fits_on_the_training_features_and_scores_every_evaluation_image():
    # the evaluation images of class c sit where the training images of class c + 1 do: a probe fitted on the
    # training features calls every one of them c + 1; one fitted on part of the evaluation images gets them right
    moved = one_hot((LABELS + 1) % 10)
    s = standard(moved)
    assert (s["top1"], s["knn"]) == (0.0, 0.0)
    np.testing.assert_array_equal(s["y_true"], LABELS)  # all 1,000, in order
    np.testing.assert_array_equal(s["y_pred"], (LABELS + 1) % 10)
    assert s["confusion"].sum() == 1000 and s["per_class"] == [0.0] * 10
    assert score(moved)["top1"] == 1.0  # the study protocol fits on the evaluation images themselves


def test_the_standard_protocol_scores_every_shifted_evaluation_image():
    clean = one_hot(LABELS)
    one_moved = clean.copy()
    one_moved[0] = one_hot(np.array([1]))[0]  # the first image (class 0) now looks like class 1
    s = standard(clean, shifted={"same": clean, "one": one_moved})
    assert s["top1"] == 1.0
    assert s["shifted_top1"] == {"same": 1.0, "one": 0.999}  # 999 of 1,000; 200 scored would give 1.0 or 0.995


def test_the_seed_and_test_size_play_no_role_in_the_standard_protocol():
    noisy = rng(2).normal(size=(1000, 8)) + LABELS[:, None] * 0.3
    training = (rng(3).normal(size=(500, 8)) + TRAIN_LABELS[:, None] * 0.3, TRAIN_LABELS)
    first = standard(noisy, training=training)
    for other in (standard(noisy, training=training, seed=1), standard(noisy, training=training, test_size=0.5)):
        assert (other["top1"], other["top3"], other["knn"]) == (first["top1"], first["top3"], first["knn"])
        np.testing.assert_array_equal(other["y_pred"], first["y_pred"])
    studied = [probe(noisy, LABELS, test_size=0.2, knn_k=30, max_iter=1000, seed=seed)["y_true"] for seed in (0, 1)]
    assert not np.array_equal(*studied)  # where the seed does split


def test_the_standard_protocol_has_no_split_to_be_too_small():
    labels = np.repeat(np.arange(10), 2)  # 20 images: too few for the study's 80/20 split (see above)
    s = probe(
        one_hot(labels),
        labels,
        test_size=0.2,
        knn_k=1,
        max_iter=100,
        seed=0,
        protocol="standard",
        training=(one_hot(TRAIN_LABELS), TRAIN_LABELS),
    )
    assert s["top1"] == 1.0 and len(s["y_true"]) == 20


def test_neighbours_beyond_the_training_images_are_one_line_naming_them():
    with pytest.raises(
        ParamError,
        match=r"^params.yaml: probe.knn_k=501 but the probe fits on only 500 training "
        r"images' features; use at most 500$",
    ):
        standard(one_hot(LABELS), knn_k=501)
    assert standard(one_hot(LABELS), knn_k=500)["top1"] == 1.0


def test_training_features_come_exactly_with_the_standard_protocol():
    with pytest.raises(ValueError, match="exactly when the protocol is 'standard'"):
        standard(one_hot(LABELS), training=None)
    with pytest.raises(ValueError, match="exactly when the protocol is 'standard'"):
        probe(
            one_hot(LABELS),
            LABELS,
            test_size=0.2,
            knn_k=3,
            max_iter=100,
            seed=0,
            training=(one_hot(TRAIN_LABELS), TRAIN_LABELS),
        )


def test_only_a_protocol_other_than_the_studys_is_named_in_the_results_file():
    classes = tuple(str(c) for c in range(10))
    assert "protocol" not in summary(score(one_hot(LABELS)), classes)  # files from before the choice stay as they were
    assert summary(standard(one_hot(LABELS)), classes)["protocol"] == "standard"
