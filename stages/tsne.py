"""Stage `tsne`: 2-d t-SNE map of the first N test images' representation (the one the probe reads,
`probe.features`), coloured by class."""

import argparse
from pathlib import Path

from contrastlab.infra import params, plots
from contrastlab.infra.errors import ParamError
from contrastlab.infra.files import load_npz, write_csv
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.features import stored_features
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
        raise ParamError(f"params.yaml: tsne.n_points={n} but there are only {len(saved['labels'])} test "
                         f"embeddings; use at most {len(saved['labels'])} or '{params.ALL}'")
    features = p["probe"]["features"]
    embeddings, labels = stored_features(saved, features)[0][:n], saved["labels"][:n]
    coords = tsne_map(embeddings, perplexity=t["perplexity"], max_iter=t["max_iter"], seed=p["seed"])

    classes = DATASETS[p["dataset"]].classes
    write_csv(args.csv, ["x", "y", "class"],
              ((f"{x:.4f}", f"{y:.4f}", classes[c]) for (x, y), c in zip(coords, labels)))
    title = f"t-SNE of {n} {p['dataset']} test images' {features} (seed {p['seed']})"
    plots.tsne_scatter(coords, labels, list(classes), title, args.png)
    print(f"t-SNE of {n} points -> {args.png}")


if __name__ == "__main__":
    run_stage(main)
