"""Stage `examples`: the seeded index arrays the loss trains on (pairs, triplets or two views)."""

import argparse
from pathlib import Path

from contrastlab.infra import params
from contrastlab.infra.errors import DataError
from contrastlab.infra.files import load_npy, save_npz, write_json
from contrastlab.infra.stage import run_stage
from contrastlab.methods.losses import LOSSES
from contrastlab.pipeline.datasets import held_out
from contrastlab.pipeline.examples import build, false_negative_rate

READS = ("dataset", "loss", "seed", "split", "pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, required=True, help="train_labels.npy of the dataset")
    parser.add_argument(
        "--out", type=Path, required=True, help=".npz with the examples (see contrastlab.pipeline.examples)"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="false-negative rate (JSON)")
    args = parser.parse_args()
    p = params.load(READS)
    q = p["pairs"]

    if not args.labels.is_file():
        raise DataError(f"{args.labels} does not exist; run the download stage first (dvc repro download)")
    labels = load_npy(args.labels)
    labels = labels[~held_out(labels, p["split"]["validation_per_class"])]  # indices into the images train sees
    loss = LOSSES[p["loss"]]
    examples = build(
        labels,
        loss.examples,
        q["anchors_per_class"],
        p["seed"],
        negatives=q["negatives"],
        augment_anchor=q["augment_anchor"],
    )
    save_npz(args.out, **examples)
    rate = 0.0 if loss.uses_labels else false_negative_rate(examples)
    write_json(args.metrics, {"false_negative_rate": round(rate, 4)})
    print(
        f"{len(examples['members'])} {loss.examples}, {q['negatives']} negatives "
        f"(false-negative rate {rate:.3f}) -> {args.out}"
    )


if __name__ == "__main__":
    run_stage(main)
