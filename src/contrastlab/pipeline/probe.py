"""What a representation is worth: a linear probe (top-1, top-3) and kNN, fitted and scored by `probe.protocol`: on one
seeded split of the evaluation images (the study's) or on the training images and every evaluation image (standard)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, top_k_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contrastlab.infra.errors import ParamError

# The logistic regression is solved to its optimum, not to a loose tolerance: where an iterative solver stops
# early depends on BLAS rounding, i.e. on the CPU. Measured on a CIFAR-10 encoder's features (8,000 fitted, 2,000
# scored; benchmarks/probe_convergence.py), scikit-learn's default (lbfgs, tol 1e-4) changed 5 of 2,000 predictions
# when the features moved by float32 rounding (2e-7); solved to the optimum, none changed. Newton-CG gets there in
# 10-20 steps without forming the Hessian: on the 256 backbone features 4x faster than Newton-Cholesky, on 784 raw
# pixels (8,000 Fashion-MNIST images) as fast as the default lbfgs (74 s vs 70 s), whose gradient it leaves at 1e-6
# instead of 0.7; lbfgs at tol 1e-8 still stopped at 0.03 after 1,000 steps.
PROBE_TOL = 1e-10


# Newton-CG pays a pass over all features for every conjugate-gradient step, and wide, correlated features take
# hundreds per Newton step: on 50,000 training images x 6,400 k-means features it had not finished after 28
# CPU-minutes. Wider than WIDE_FEATURES, the same objective is minimised by full-batch L-BFGS in float64 to WIDE_TOL:
# on CIFAR-10 k-means features (256 wide, 8,000 fitted) it predicted all 2,000 scored images as Newton-CG at PROBE_TOL
# after 514 steps, while 1e-8 took more than 5,000 (benchmarks/probe_wide.py measures both solvers).
WIDE_FEATURES = 4096
WIDE_TOL = 1e-6


class LBFGSLogisticRegression(ClassifierMixin, BaseEstimator):
    """scikit-learn's multinomial logistic regression objective (mean cross-entropy + ||W||^2 / (2 C n), intercept
    unpenalised) minimised by full-batch L-BFGS in torch, for features too wide for Newton-CG. It stops when no
    gradient component exceeds `tol` (Newton-CG's criterion), else after `max_iter` steps with a ConvergenceWarning,
    as scikit-learn's solvers do."""

    def __init__(self, C: float = 1.0, tol: float = WIDE_TOL, max_iter: int = 1000):
        self.C, self.tol, self.max_iter = C, tol, max_iter

    def fit(self, x: np.ndarray, y: np.ndarray) -> LBFGSLogisticRegression:
        self.classes_, indices = np.unique(y, return_inverse=True)
        features = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64))
        target = torch.from_numpy(indices)
        weight = torch.zeros(features.shape[1], len(self.classes_), dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(len(self.classes_), dtype=torch.float64, requires_grad=True)
        penalty = 0.5 / (self.C * len(target))
        lbfgs = torch.optim.LBFGS(
            [weight, bias],
            max_iter=self.max_iter,
            max_eval=2 * self.max_iter,
            tolerance_grad=self.tol,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def objective() -> torch.Tensor:
            lbfgs.zero_grad()
            loss = F.cross_entropy(features @ weight + bias, target) + penalty * weight.square().sum()
            loss.backward()
            return loss

        lbfgs.step(objective)
        objective()  # the gradient where it stopped
        self.n_iter_ = lbfgs.state[weight]["n_iter"]
        largest = max(float(part.grad.abs().max()) for part in (weight, bias) if part.grad is not None)
        if largest > self.tol:
            message = f"L-BFGS stopped short of gradient {self.tol} after {self.n_iter_} steps"
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
        self.coef_, self.intercept_ = weight.detach().T.numpy(), bias.detach().numpy()
        return self

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef_.T + self.intercept_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.decision_function(x)), dim=1).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(x).argmax(axis=1)]


def linear_probe(max_iter: int, width: int = 0) -> LogisticRegression | LBFGSLogisticRegression:
    """The probe's logistic regression (C=1, multinomial) for features `width` wide, set up to be solved to its
    optimum: Newton-CG, or L-BFGS above WIDE_FEATURES."""
    if width > WIDE_FEATURES:
        return LBFGSLogisticRegression(max_iter=max_iter)
    return LogisticRegression(solver="newton-cg", tol=PROBE_TOL, max_iter=max_iter)


def at_chance(top1: float, n_scored: int, n_classes: int) -> bool:
    """Top-1 no better than guessing among balanced classes, within two binomial standard errors."""
    chance = 1 / n_classes
    return top1 <= chance + 2 * math.sqrt(chance * (1 - chance) / n_scored)


def study_split(labels: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The study protocol's rows to fit on and to score: one stratified, seeded split of the evaluation images."""
    classes, scored = np.unique(labels), math.ceil(test_size * len(labels))  # as train_test_split rounds
    if min(scored, len(labels) - scored) < len(classes):
        raise ParamError(
            f"params.yaml: probe.test_size={test_size} splits {len(labels)} images into {len(labels) - scored} "
            f"to fit and {scored} to score, but each part needs one of each of the {len(classes)} classes; "
            "probe more images (e.g. a larger split.validation_per_class) or change probe.test_size"
        )
    return train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed)


def probe(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float,
    knn_k: int,
    max_iter: int,
    seed: int,
    standardize: bool = False,
    protocol: str = "study",
    training: tuple[np.ndarray, np.ndarray] | None = None,
    shifted: dict[str, np.ndarray] | None = None,
) -> dict:
    """Score the evaluation images' `embeddings` with ONE logistic regression, fitted by `protocol`:
    - `study`: on a stratified, seeded part of the evaluation images (all but `test_size` of them), scored on
      the rest;
    - `standard` (the published linear evaluation): on the training images' `(features, labels)` in `training`,
      scored on every evaluation image; `test_size` and `seed` play no role.
    The keyword settings are params.yaml's `probe` section (`fit_settings`).

    Top-1 and top-3 come from the same classifier (the study used two different splits and
    classifiers); kNN and per-class accuracy use the same split. `shifted` maps a name to the
    embeddings of the same evaluation images after a change (e.g. a shift): the classifier fitted on the
    unchanged images is scored on the changed versions of the scored images. `standardize`
    scales each coordinate to unit variance on the fitting split before the logistic regression:
    its fixed penalty (C=1) otherwise underfits small coordinates, such as unit-length embeddings'.
    The features are probed in float64; `converged` says whether the solver reached the optimum within
    `max_iter` steps, and `warnings` names what makes the numbers suspect (no convergence, chance level).
    """
    if (protocol == "standard") != (training is not None):
        raise ValueError(
            f"probe(protocol={protocol!r}) takes the training images' features exactly when the protocol is 'standard'"
        )
    classes = np.unique(labels)
    embeddings = embeddings.astype(np.float64)
    if training is None:
        fit, score = study_split(labels, test_size, seed)
        x_fit, y_fit, fitted = embeddings[fit], labels[fit], "embeddings"
    else:
        score = np.arange(len(labels))
        x_fit, y_fit, fitted = training[0].astype(np.float64), training[1], "training images' features"
    x_score, y_score = embeddings[score], labels[score]
    if knn_k > len(x_fit):
        raise ParamError(
            f"params.yaml: probe.knn_k={knn_k} but the probe fits on only {len(x_fit)} {fitted}; "
            f"use at most {len(x_fit)}"
        )
    linear = linear_probe(max_iter, x_fit.shape[1])
    classifier = make_pipeline(StandardScaler(), linear) if standardize else linear
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        classifier.fit(x_fit, y_fit)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    predicted = classifier.predict(x_score)
    top1 = float(np.mean(predicted == y_score))
    problems = (
        []
        if converged
        else [f"the linear probe did not converge in probe.max_iter={max_iter} steps; raise probe.max_iter"]
    )
    if at_chance(top1, len(y_score), len(classes)):
        problems.append(
            f"the linear probe is at chance level (top-1 {top1:.4f} with {len(classes)} classes): "
            "the representation carries no class information"
        )
    top3 = top_k_accuracy_score(
        y_score, classifier.predict_proba(x_score), k=min(3, len(classes)), labels=classifier.classes_
    )
    knn = KNeighborsClassifier(n_neighbors=knn_k).fit(x_fit, y_fit)
    matrix = confusion_matrix(y_score, predicted, labels=classes)
    return {
        "top1": top1,
        "top3": float(top3),
        "knn": float(knn.score(x_score, y_score)),
        "per_class": (matrix.diagonal() / matrix.sum(axis=1)).tolist(),
        "shifted_top1": {
            name: float(classifier.score(x[score].astype(np.float64), y_score)) for name, x in (shifted or {}).items()
        },
        "converged": converged,
        "warnings": problems,
        "confusion": matrix,
        "y_true": y_score,
        "y_pred": predicted,
        "protocol": protocol,
    }


def fit_settings(section: dict) -> dict:
    """params.yaml's `probe` section as the keyword settings of `probe`: all but `features`, which chooses
    what is probed."""
    return {key: value for key, value in section.items() if key != "features"}


def headline(scores: dict) -> dict[str, float]:
    """The probe's top-1, top-3 and kNN accuracy, rounded as every results file stores them."""
    return {name: round(scores[name], 4) for name in ("top1", "top3", "knn")}


def summary(scores: dict, classes: tuple[str, ...]) -> dict:
    """What a probe's results file holds: headline numbers, accuracy per class and on shifted images, and the protocol
    unless it is the study's."""
    return {
        **headline(scores),
        "per_class": {name: round(acc, 4) for name, acc in zip(classes, scores["per_class"], strict=True)},
        "shifted_top1": {name: round(acc, 4) for name, acc in scores["shifted_top1"].items()},
        "converged": scores["converged"],
        "warnings": scores["warnings"],
        # the study protocol goes unnamed, so its files stay as they were before the choice existed
        **({"protocol": scores["protocol"]} if scores["protocol"] != "study" else {}),
    }
