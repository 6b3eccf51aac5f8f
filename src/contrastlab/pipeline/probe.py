"""What a representation is worth: a linear probe (top-1, top-3) and kNN on one seeded split."""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, top_k_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contrastlab.infra.errors import ParamError


def probe(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    test_size: float,
    knn_k: int,
    max_iter: int,
    seed: int,
    standardize: bool = False,
    shifted: dict[str, np.ndarray] | None = None,
) -> dict:
    """Score the embeddings with ONE stratified, seeded split and ONE logistic regression.
    The keyword settings are params.yaml's `probe` section (`fit_settings`).

    Top-1 and top-3 come from the same classifier (the study used two different splits and
    classifiers); kNN and per-class accuracy use the same split. `shifted` maps a name to the
    embeddings of the same images after a change (e.g. a shift): the classifier fitted on the
    unchanged images is scored on the changed versions of the held-out images. `standardize`
    scales each coordinate to unit variance on the fitting split before the logistic regression:
    its fixed penalty (C=1) otherwise underfits small coordinates, such as unit-length embeddings'.
    """
    classes, scored = len(np.unique(labels)), math.ceil(test_size * len(labels))  # as train_test_split rounds
    if min(scored, len(labels) - scored) < classes:
        raise ParamError(f"params.yaml: probe.test_size={test_size} splits {len(labels)} images into {len(labels) - scored} "
                         f"to fit and {scored} to score, but each part needs one of each of the {classes} classes; "
                         "probe more images (e.g. a larger split.validation_per_class) or change probe.test_size")
    fit, score = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels, random_state=seed)
    x_fit, x_score, y_fit, y_score = embeddings[fit], embeddings[score], labels[fit], labels[score]
    if knn_k > len(x_fit):
        raise ParamError(f"params.yaml: probe.knn_k={knn_k} but the probe fits on only {len(x_fit)} embeddings; "
                         f"use at most {len(x_fit)}")
    linear = LogisticRegression(max_iter=max_iter)
    classifier = (make_pipeline(StandardScaler(), linear) if standardize else linear).fit(x_fit, y_fit)
    predicted = classifier.predict(x_score)
    classes = np.unique(labels)
    top3 = top_k_accuracy_score(y_score, classifier.predict_proba(x_score), k=min(3, len(classes)), labels=classifier.classes_)
    knn = KNeighborsClassifier(n_neighbors=knn_k).fit(x_fit, y_fit)
    matrix = confusion_matrix(y_score, predicted, labels=classes)
    return {
        "top1": float(np.mean(predicted == y_score)),
        "top3": float(top3),
        "knn": float(knn.score(x_score, y_score)),
        "per_class": (matrix.diagonal() / matrix.sum(axis=1)).tolist(),
        "shifted_top1": {name: float(classifier.score(x[score], y_score)) for name, x in (shifted or {}).items()},
        "confusion": matrix,
        "y_true": y_score,
        "y_pred": predicted,
    }


def fit_settings(section: dict) -> dict:
    """params.yaml's `probe` section as the keyword settings of `probe`: all but `features`, which chooses
    what is probed."""
    return {key: value for key, value in section.items() if key != "features"}


def headline(scores: dict) -> dict[str, float]:
    """The probe's top-1, top-3 and kNN accuracy, rounded as every results file stores them."""
    return {name: round(scores[name], 4) for name in ("top1", "top3", "knn")}


def summary(scores: dict, classes: tuple[str, ...]) -> dict:
    """What a probe's results file holds: headline numbers, accuracy per class and on shifted images."""
    return {
        **headline(scores),
        "per_class": {name: round(acc, 4) for name, acc in zip(classes, scores["per_class"])},
        "shifted_top1": {name: round(acc, 4) for name, acc in scores["shifted_top1"].items()},
    }
