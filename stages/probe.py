"""Stage `probe`: linear probe (top-1, top-3), kNN and per-class accuracy on the test images'
representation (`probe.features`: the embedding or the backbone's features), fitted as `probe.protocol` says (on
part of the test images, scored on the rest; or on the training images, scored on every test image), and the same
probe's top-1 on the scored images shifted horizontally (robustness). What makes the numbers suspect (a probe that
did not converge, collapsed features) is kept in the metrics' details (`warnings`) and printed as "warning: ..."
lines."""

import argparse
from pathlib import Path

from contrastlab.infra import params, plots
from contrastlab.infra.files import load_npz, write_csv, write_metrics
from contrastlab.infra.stage import run_stage
from contrastlab.pipeline.datasets import DATASETS
from contrastlab.pipeline.features import collapse_warning, stored_features, stored_training_features
from contrastlab.pipeline.probe import fit_settings, probe, summary

READS = ("dataset", "seed", "probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embeddings", type=Path, required=True, help=".npz written by the embed stage")
    parser.add_argument(
        "--metrics", type=Path, required=True, help="probe metrics (JSON; the rest beside it: files.details_path)"
    )
    parser.add_argument("--confusion-csv", type=Path, required=True, help="actual/predicted rows for `dvc plots`")
    parser.add_argument("--confusion-png", type=Path, required=True)
    args = parser.parse_args()
    p = params.load(READS)

    saved = load_npz(args.embeddings)
    features, shifted = stored_features(saved, p["probe"]["features"])
    training = stored_training_features(saved, p["probe"]["features"]) if p["probe"]["protocol"] == "standard" else None
    scores = probe(
        features, saved["labels"], **fit_settings(p["probe"]), seed=p["seed"], training=training, shifted=shifted
    )
    collapsed = collapse_warning(features, p["probe"]["features"])
    scores["warnings"] = [collapsed, *scores["warnings"]] if collapsed else scores["warnings"]  # the cause first
    classes = DATASETS[p["dataset"]].classes
    write_metrics(args.metrics, summary(scores, classes))
    write_csv(
        args.confusion_csv,
        ["actual", "predicted"],
        ((classes[a], classes[b]) for a, b in zip(scores["y_true"], scores["y_pred"], strict=True)),
    )
    plots.confusion_heatmap(
        scores["confusion"],
        list(classes),
        f"linear probe of the {p['probe']['features']} on "
        f"{p['dataset']} (seed {p['seed']}): top-1 {scores['top1']:.3f}",
        args.confusion_png,
    )
    robustness = "".join(f"  shift {name}: {acc:.4f}" for name, acc in scores["shifted_top1"].items())
    print(
        f"probe top-1 {scores['top1']:.4f}  top-3 {scores['top3']:.4f}  kNN {scores['knn']:.4f}{robustness}"
        f" -> {args.metrics}"
    )
    for warning in scores["warnings"]:
        print(f"warning: {warning}")


if __name__ == "__main__":
    run_stage(main)
