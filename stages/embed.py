"""Stage `embed`: embed every test image with the trained encoder in eval mode."""

import argparse
from pathlib import Path

import numpy as np
import torch

from contrastlab import params
from contrastlab.cli import run_stage
from contrastlab.datasets import load_split
from contrastlab.model import embed_images, make_encoder, pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--model", type=Path, required=True, help="encoder written by the train stage")
    parser.add_argument("--out", type=Path, required=True, help=".npz with embeddings and labels")
    args = parser.parse_args()
    p = params.load("embed")

    checkpoint = torch.load(args.model, map_location="cpu")
    encoder = make_encoder(checkpoint["channels"])
    encoder.load_state_dict(checkpoint["state_dict"])
    images, labels = load_split(args.data, "test")
    embeddings = embed_images(encoder.to(pick_device()), images, p["embed"]["batch_size"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, embeddings=embeddings, labels=labels)
    print(f"{embeddings.shape[0]} test images -> {embeddings.shape[1]}-d embeddings in {args.out}")


if __name__ == "__main__":
    run_stage(main)
