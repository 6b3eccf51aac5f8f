"""Stage `pairs`: the seeded pair/triplet index arrays the loss trains on."""

import argparse
from pathlib import Path

import numpy as np

from contrastlab import params
from contrastlab.cli import run_stage, write_json
from contrastlab.losses import LOSSES
from contrastlab.pairs import build, false_negative_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, required=True, help="train_labels.npy of the dataset")
    parser.add_argument("--out", type=Path, required=True, help=".npz with the examples (see contrastlab.pairs)")
    parser.add_argument("--metrics", type=Path, required=True, help="false-negative rate (JSON)")
    args = parser.parse_args()
    p = params.load("pairs")
    q = p["pairs"]

    labels = np.load(args.labels)
    layout = LOSSES[p["loss"]].examples
    examples = build(labels, layout, q["anchors_per_class"], p["seed"], negatives=q["negatives"],
                     augment_anchor=q["augment_anchor"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **examples)
    rate = 0.0 if LOSSES[p["loss"]].uses_labels else false_negative_rate(examples)
    write_json(args.metrics, {"false_negative_rate": round(rate, 4)})
    print(f"{len(examples['members'])} {layout}, {q['negatives']} negatives "
          f"(false-negative rate {rate:.3f}) -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
