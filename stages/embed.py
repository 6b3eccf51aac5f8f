"""Stage `embed`: embed every test image (or, with `split.validation_per_class`, every held-out training
image) with the trained encoder in eval mode, also shifted
horizontally by each of `embed.shifts` pixels (for the probe's robustness scores); with `probe.protocol: standard`
also every training image (without the held-out ones), unshifted, which the probe fits on. Both representations
are kept (the embedding and the backbone's features), so `probe.features` re-runs no embedding."""

import argparse
from pathlib import Path

import numpy as np

from contrastlab.infra import params
from contrastlab.infra.files import save_npz
from contrastlab.infra.machine import pick_device, use_cpu_kernels
from contrastlab.infra.stage import run_stage
from contrastlab.methods.encoders import load_encoder
from contrastlab.pipeline.datasets import load_evaluation, load_training
from contrastlab.pipeline.embed import embed_images, shift_horizontally, stop_if_outputs_not_finite
from contrastlab.pipeline.features import shifted_name, training_name

READS = ("cpu_kernels", "embed", "split", "probe.protocol")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--model", type=Path, required=True, help="encoder written by the train stage")
    parser.add_argument("--out", type=Path, required=True, help=".npz with embeddings and labels")
    args = parser.parse_args()
    loaded = params.load(READS)
    use_cpu_kernels(loaded["cpu_kernels"])  # before any tensor is computed
    p = loaded["embed"]

    encoder = load_encoder(args.model, pick_device())
    images, labels = load_evaluation(args.data, loaded["split"]["validation_per_class"])
    arrays = embed_images(encoder, images, p["batch_size"])
    for shift in p["shifts"]:
        moved = embed_images(encoder, shift_horizontally(images, shift), p["batch_size"])
        arrays.update({shifted_name(features, shift): array for features, array in moved.items()})
    which = "held-out training" if loaded["split"]["validation_per_class"] else "test"
    stop_if_outputs_not_finite(arrays, f"{which} images")
    training: dict[str, np.ndarray] = {}
    if loaded["probe"]["protocol"] == "standard":  # the probe fits on these
        train_images, train_labels = load_training(args.data, loaded["split"]["validation_per_class"])
        embedded = embed_images(encoder, train_images, p["batch_size"])
        stop_if_outputs_not_finite(embedded, "training images")
        training = {training_name(name): array for name, array in {**embedded, "labels": train_labels}.items()}
    save_npz(args.out, labels=labels, **arrays, **training)
    also = f" and {len(training[training_name('labels')])} training images" if training else ""
    print(
        f"{len(labels)} {which} images (and {len(p['shifts'])} shifted copies){also} -> "
        f"{arrays['embedding'].shape[1]}-d embeddings and {arrays['backbone'].shape[1]} backbone features in {args.out}"
    )


if __name__ == "__main__":
    run_stage(main)
