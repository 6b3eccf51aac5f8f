"""Stage `pairs`: the seeded pair/triplet index arrays the loss trains on."""

import argparse
from pathlib import Path

import numpy as np

from contrastlab import params
from contrastlab.cli import run_stage
from contrastlab.losses import LOSSES
from contrastlab.pairs import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, required=True, help="train_labels.npy of the dataset")
    parser.add_argument("--out", type=Path, required=True, help=".npz with members, augmented, target")
    args = parser.parse_args()
    p = params.load("pairs")

    labels = np.load(args.labels)
    examples = build(labels, LOSSES[p["loss"]].examples, p["pairs"]["anchors_per_class"], p["seed"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **examples)
    print(f"{len(examples['members'])} {LOSSES[p['loss']].examples} -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
