"""Does the probe's answer hinge on rounding? Fits the linear probe on the embed stage's features twice, as
they are and moved by float32 rounding (a relative 2e-7), with scikit-learn's default solver (lbfgs, tol 1e-4)
and with the probe's own (`linear_probe`: solved to the optimum), and counts the held-out predictions that
change. A probe whose predictions change under rounding gives different numbers on different CPUs.

    dvc repro embed && python benchmarks/probe_convergence.py     # the workspace's scenario, both features
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from contrastlab.pipeline.probe import linear_probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings.npz"))
    parser.add_argument("--features", nargs="+", default=["embedding", "backbone"])
    args = parser.parse_args()
    saved = np.load(args.embeddings)
    labels = saved["labels"]
    fit, scored = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    for name in args.features:
        features = saved[name].astype(np.float64)
        rounded = features * (1 + np.random.default_rng(1).standard_normal(features.shape) * 2e-7)
        for solver, make in [
            ("lbfgs, tol 1e-4 (default)", lambda: LogisticRegression(max_iter=1000)),
            ("the probe's", lambda: linear_probe(1000)),
        ]:
            start = time.perf_counter()
            model = make().fit(features[fit], labels[fit])
            seconds = time.perf_counter() - start
            predicted = model.predict(features[scored])
            moved = make().fit(rounded[fit], labels[fit]).predict(rounded[scored])
            print(
                f"{name:9s} {solver:26s} {seconds:6.1f} s  top-1 {np.mean(predicted == labels[scored]):.4f}  "
                f"predictions changed by rounding: {int(np.sum(predicted != moved))} of {len(scored)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
