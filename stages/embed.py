"""Stage `embed`: embed every test image with the trained encoder in eval mode, also shifted
horizontally by each of `embed.shifts` pixels (for the probe's robustness scores)."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.files import save_npz
from contrastlab.infra.stage import run_stage
from contrastlab.methods.encoders import load_encoder, pick_device
from contrastlab.pipeline.datasets import load_split
from contrastlab.pipeline.embed import embed_images, shift_horizontally

READS = ("embed",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--model", type=Path, required=True, help="encoder written by the train stage")
    parser.add_argument("--out", type=Path, required=True, help=".npz with embeddings and labels")
    args = parser.parse_args()
    p = params.load(READS)["embed"]

    encoder = load_encoder(args.model, pick_device())
    images, labels = load_split(args.data, "test")
    embeddings = embed_images(encoder, images, p["batch_size"])
    shifted = {f"shift{s:+d}": embed_images(encoder, shift_horizontally(images, s), p["batch_size"]) for s in p["shifts"]}
    save_npz(args.out, embeddings=embeddings, labels=labels, **shifted)
    print(f"{embeddings.shape[0]} test images (and {len(shifted)} shifted copies) -> "
          f"{embeddings.shape[1]}-d embeddings in {args.out}")


if __name__ == "__main__":
    run_stage(main)
