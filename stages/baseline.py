"""Stage `baseline@<name>`: one reference point of `BASELINES` for this dataset, seed and encoder: fitted on the
training images, then scored by the scenarios' own probe (`probe.protocol`, split and features) on its features of
the evaluation images, and of the training images when the probe fits on those (the track stage logs it to MLflow)."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.errors import ParamError
from contrastlab.infra.files import write_metrics
from contrastlab.infra.machine import pick_device, use_cpu_kernels
from contrastlab.infra.stage import run_stage
from contrastlab.methods.baselines import BASELINES
from contrastlab.pipeline.datasets import DATASETS, load_evaluation, load_training
from contrastlab.pipeline.probe import fit_settings, probe, summary

READS = params.BASELINE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, help=f"which baseline: {', '.join(BASELINES)}")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument(
        "--metrics", type=Path, required=True, help="its probe metrics (JSON; the rest beside it: files.details_path)"
    )
    args = parser.parse_args()
    if args.name not in BASELINES:
        raise ParamError(f"no baseline '{args.name}'; known: {', '.join(BASELINES)}")
    p = params.load(READS)
    use_cpu_kernels(p["cpu_kernels"])  # before any tensor is computed

    train_images, train_labels = load_training(args.data, p["split"]["validation_per_class"])
    test_images, test_labels = load_evaluation(args.data, p["split"]["validation_per_class"])
    represent = BASELINES[args.name].fit({"train_images": train_images, "train_labels": train_labels}, p, pick_device())
    features = represent(test_images)
    training = (represent(train_images), train_labels) if p["probe"]["protocol"] == "standard" else None
    scores = probe(features, test_labels, **fit_settings(p["probe"]), seed=p["seed"], training=training)
    write_metrics(args.metrics, summary(scores, DATASETS[p["dataset"]].classes))
    print(
        f"baseline {args.name} ({features.shape[1]} features, {p['probe']['protocol']} protocol): probe top-1 "
        f"{scores['top1']:.4f}  top-3 {scores['top3']:.4f}  kNN {scores['knn']:.4f} -> {args.metrics}"
    )


if __name__ == "__main__":
    run_stage(main)
