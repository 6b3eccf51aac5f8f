"""Stage `tsne`: 2-d t-SNE map of the first N test embeddings, coloured by class."""

import argparse
import csv
from pathlib import Path

import numpy as np

from contrastlab import params, plots
from contrastlab.cli import run_stage
from contrastlab.datasets import DATASETS
from contrastlab.evaluate import tsne_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embeddings", type=Path, required=True, help=".npz written by the embed stage")
    parser.add_argument("--csv", type=Path, required=True, help="points for `dvc plots` (x, y, class)")
    parser.add_argument("--png", type=Path, required=True)
    args = parser.parse_args()
    p = params.load("tsne")
    t = p["tsne"]

    saved = np.load(args.embeddings)
    n = min(t["n_points"], len(saved["labels"]))
    embeddings, labels = saved["embeddings"][:n], saved["labels"][:n]
    coords = tsne_map(embeddings, perplexity=t["perplexity"], max_iter=t["max_iter"], seed=p["seed"])

    classes = DATASETS[p["dataset"]].classes
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "class"])
        writer.writerows((f"{x:.4f}", f"{y:.4f}", classes[c]) for (x, y), c in zip(coords, labels))
    title = f"t-SNE of {n} test embeddings: {params.scenario_name(p)}"
    plots.tsne_scatter(coords, labels, list(classes), title, args.png)
    print(f"t-SNE of {n} points -> {args.png}")


if __name__ == "__main__":
    run_stage(main)
