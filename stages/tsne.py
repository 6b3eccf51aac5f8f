"""Stage `tsne`: 2-d t-SNE map of the first N test images' representation (the one the probe reads,
`probe.features`), coloured by class. Collapsed features (every image at one point) have no map: the points
are all at (0, 0), the figure says why, and the stage prints the warning (the probe records it)."""

import argparse
from pathlib import Path

import numpy as np

from contrastlab.infra import params, plots
from contrastlab.infra.errors import ParamError
from contrastlab.infra.files import load_npz, write_csv
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.features import collapse_warning, stored_features
from contrastlab.pipeline.tsne import tsne_map

READS = ("dataset", "seed", "tsne", "probe.features")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embeddings", type=Path, required=True, help=".npz written by the embed stage")
    parser.add_argument("--csv", type=Path, required=True, help="points for `dvc plots` (x, y, class)")
    parser.add_argument("--png", type=Path, required=True)
    args = parser.parse_args()
    p = params.load(READS)
    t = p["tsne"]

    saved = load_npz(args.embeddings)
    n = len(saved["labels"]) if t["n_points"] == params.ALL else t["n_points"]
    if n > len(saved["labels"]):
        raise ParamError(
            f"params.yaml: tsne.n_points={n} but there are only {len(saved['labels'])} test "
            f"embeddings; use at most {len(saved['labels'])} or '{params.ALL}'"
        )
    if t["perplexity"] >= n:  # sklearn's own condition: perplexity < n_samples
        more = f" or more tsne.n_points (at most {len(saved['labels'])})" if n < len(saved["labels"]) else ""
        raise ParamError(
            f"params.yaml: tsne.perplexity={t['perplexity']} but the map has only {n} points; "
            f"use a perplexity below {n}{more}"
        )
    features = p["probe"]["features"]
    embeddings, labels = stored_features(saved, features)[0][:n], saved["labels"][:n]
    collapsed = collapse_warning(embeddings, features)
    coords = (
        np.zeros((n, 2))
        if collapsed
        else tsne_map(embeddings, perplexity=t["perplexity"], max_iter=t["max_iter"], seed=p["seed"])
    )

    classes = DATASETS[p["dataset"]].classes
    write_csv(
        args.csv,
        ["x", "y", "class"],
        ((f"{x:.4f}", f"{y:.4f}", classes[c]) for (x, y), c in zip(coords, labels, strict=True)),
    )
    title = f"t-SNE of {n} {p['dataset']} test images' {features} (seed {p['seed']})"
    if collapsed:
        plots.placeholder(f"No t-SNE map: {collapsed}.", title, args.png)
        print(f"warning: {collapsed}")
        print(f"no t-SNE of {n} collapsed points: all at (0, 0) in {args.csv}, {args.png} says why")
    else:
        plots.tsne_scatter(coords, labels, list(classes), title, args.png)
        print(f"t-SNE of {n} points -> {args.png}")


if __name__ == "__main__":
    run_stage(main)
