"""Stage `baseline@<name>`: one reference point of `BASELINES` for this dataset, seed and encoder, scored
by the scenarios' own probe on the same split and features (the track stage logs it to MLflow)."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.files import write_json
from contrastlab.infra.machine import use_cpu_kernels
from contrastlab.infra.stage import run_stage
from contrastlab.methods.baselines import BASELINES
from contrastlab.methods.encoders import pick_device
from contrastlab.pipeline.datasets import DATASETS, load_evaluation, load_training
from contrastlab.pipeline.probe import fit_settings, probe, summary

READS = params.BASELINE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True, choices=sorted(BASELINES), help="which baseline")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--metrics", type=Path, required=True, help="its probe metrics (JSON)")
    args = parser.parse_args()
    p = params.load(READS)
    use_cpu_kernels(p["cpu_kernels"])  # before any tensor is computed

    train_images, train_labels = load_training(args.data, p["split"]["validation_per_class"])
    test_images, test_labels = load_evaluation(args.data, p["split"]["validation_per_class"])
    data = {"train_images": train_images, "train_labels": train_labels, "test_images": test_images}
    features = BASELINES[args.name].features(data, p, pick_device())
    scores = probe(features, test_labels, **fit_settings(p["probe"]), seed=p["seed"])
    write_json(args.metrics, summary(scores, DATASETS[p["dataset"]].classes))
    print(f"baseline {args.name} ({p['probe']['features']}): probe top-1 {scores['top1']:.4f}  top-3 {scores['top3']:.4f}  "
          f"kNN {scores['knn']:.4f} -> {args.metrics}")


if __name__ == "__main__":
    run_stage(main)
