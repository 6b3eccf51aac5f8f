"""Choose the `supervised_tuned` baseline's augmentation and learning rate on held-out training images
(the last 1,000 of each class, `split.validation_per_class`), never on the test set: the supervised
baseline trained on the first 4,000 of each class with AdamW, one-cycle, 10 epochs, and each (aug, lr),
then probed on the held-out images' features (`probe` params of params.yaml).

    python benchmarks/supervised_recipe.py --dataset cifar10 --aug shift_flip pad_rotate_scale --lr 0.003 0.01
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from contrastlab.methods.baselines import SUPERVISED_RECIPE, supervised_representation
from contrastlab.pipeline.datasets import load_evaluation, load_training
from contrastlab.pipeline.probe import fit_settings, probe

HELD_OUT_PER_CLASS = 1000
ANCHORS_PER_CLASS = 4000  # every CIFAR-10 training image that is not held out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--aug", nargs="+", default=["shift_flip", "pad_rotate_scale"])
    parser.add_argument("--lr", nargs="+", type=float, default=[SUPERVISED_RECIPE["lr"]])
    parser.add_argument("--features", default="backbone", choices=["embedding", "backbone"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    p = yaml.safe_load(Path("params.yaml").read_text())
    p.update(dataset=args.dataset, seed=args.seed)
    p["probe"]["features"] = args.features
    p["pairs"]["anchors_per_class"] = ANCHORS_PER_CLASS
    data_dir = Path("data/datasets") / args.dataset
    train_images, train_labels = load_training(data_dir, HELD_OUT_PER_CLASS)
    held_out_images, held_out_labels = load_evaluation(data_dir, HELD_OUT_PER_CLASS)
    data = {"train_images": train_images, "train_labels": train_labels}
    print(f"| dataset | aug | lr | held-out top-1 ({args.features}) | seconds |\n|---|---|---|---|---|")
    for aug in args.aug:
        for lr in args.lr:
            start = time.perf_counter()
            represent = supervised_representation(
                data, p, torch.device("cpu"), False, aug=aug, recipe={**SUPERVISED_RECIPE, "lr": lr}
            )
            features = represent(held_out_images)
            top1 = probe(features, held_out_labels, **fit_settings(p["probe"]), seed=args.seed)["top1"]
            print(f"| {args.dataset} | {aug} | {lr:g} | {top1:.4f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
