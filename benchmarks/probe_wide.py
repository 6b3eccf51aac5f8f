"""The probe's two solvers on the classical baselines' features: Newton-CG (up to 4,096 features) and full-batch
L-BFGS (wider), on the same objective. For each K: the CIFAR-10 k-means features (Coates et al. 2011, 4K wide) of the
training and test images, then each solver fitted on the first `--fit` training images (Newton-CG only where it is
affordable) and scored on every test image: seconds, steps, largest gradient, top-1 and the test predictions the two
solvers disagree on.

    python benchmarks/probe_wide.py --centroids 64 1600 --fit 8000 50000
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from contrastlab.methods import patches
from contrastlab.pipeline.datasets import load_split
from contrastlab.pipeline.probe import WIDE_FEATURES, LBFGSLogisticRegression, linear_probe

NEWTON_AFFORDABLE = 8_000 * 256  # rows x features: Newton-CG took 5 CPU-minutes here under load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/datasets/cifar10"))
    parser.add_argument("--centroids", type=int, nargs="+", default=[64, 1600])
    parser.add_argument("--fit", type=int, nargs="+", default=[8_000, 50_000], help="training images to fit on")
    args = parser.parse_args()
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "test")
    print(
        "| K | features | fitted | solver | seconds | steps | largest gradient | top-1 | predictions unlike Newton-CG |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for centroids in args.centroids:
        start = time.perf_counter()
        code = patches.kmeans_patches(train_images, centroids=centroids, seed=0, progress=False)
        train, test = code(train_images).astype(np.float64), code(test_images).astype(np.float64)
        print(f"<!-- K = {centroids}: features in {time.perf_counter() - start:.0f} s -->", flush=True)
        for rows in args.fit:
            x, y = train[:rows], train_labels[:rows]
            solvers = {"L-BFGS": LBFGSLogisticRegression(max_iter=5000)}
            if rows * x.shape[1] <= NEWTON_AFFORDABLE and x.shape[1] <= WIDE_FEATURES:
                solvers["Newton-CG"] = linear_probe(1000, x.shape[1])
            predicted = {}
            for name, solver in solvers.items():
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    solver.fit(x, y)
                seconds = time.perf_counter() - start
                predicted[name] = solver.predict(test)
                unlike = (
                    str(int(np.sum(predicted[name] != predicted["Newton-CG"])))
                    if "Newton-CG" in predicted and name != "Newton-CG"
                    else ""
                )
                steps = int(np.max(solver.n_iter_))
                print(
                    f"| {centroids} | {x.shape[1]} | {rows} | {name} | {seconds:.0f} | {steps} | "
                    f"{mean_gradient(solver, x, y):.1e} | {np.mean(predicted[name] == test_labels):.4f} | {unlike} |",
                    flush=True,
                )


def mean_gradient(solver, x: np.ndarray, y: np.ndarray) -> float:
    """The largest component of the gradient of scikit-learn's objective (the row mean, C = 1) where it stopped."""
    logits = x @ solver.coef_.T + solver.intercept_
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = (p - np.eye(p.shape[1])[np.searchsorted(solver.classes_, y)]) / len(y)
    return float(max(np.abs(x.T @ residual + solver.coef_.T / len(y)).max(), np.abs(residual.sum(0)).max()))


if __name__ == "__main__":
    main()
