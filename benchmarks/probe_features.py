"""Which backbone features to probe: the study encoder's last hidden map (256 x 3 x 3) flattened to 2,304
numbers, or averaged over its 9 positions to 256. Probes both, and the embedding, for the trained encoder
of the workspace's scenario and for the same encoder at random init (BatchNorm statistics measured as the
`random_init` baseline does), on the probe's split of the test set.

    dvc repro embed && python benchmarks/probe_features.py      # mnist, seed 0: the default scenario
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from contrastlab.methods.baselines import calibrate_batchnorm
from contrastlab.methods.encoders import load_encoder, make_encoder
from contrastlab.pipeline.datasets import load_split
from contrastlab.pipeline.preprocess import normalize, to_unit
from contrastlab.pipeline.probe import probe


@torch.no_grad()
def representations(encoder, images: np.ndarray) -> dict[str, np.ndarray]:
    encoder.eval()
    hidden, embedded = [], []
    for start in range(0, len(images), 2048):
        x = normalize(to_unit(torch.from_numpy(images[start : start + 2048])))
        h = encoder.backbone(x)
        hidden.append(h)
        embedded.append(encoder.projection(h))
    h = torch.cat(hidden)
    return {
        "embedding": torch.cat(embedded).numpy(),
        "backbone, averaged": h.mean(dim=(2, 3)).numpy(),
        "backbone, flattened": h.flatten(1).numpy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/datasets/mnist"))
    parser.add_argument("--model", type=Path, default=Path("models/encoder.pt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = load_split(args.data, "test")
    train_images, _ = load_split(args.data, "train")
    trained = load_encoder(args.model, torch.device("cpu"))
    torch.manual_seed(args.seed)  # as the random_init baseline makes it
    untrained = make_encoder(images.shape[1]).to(memory_format=torch.channels_last)
    calibrate_batchnorm(untrained, train_images, 1024)
    print("| features | size | trained top-1 | random init top-1 | gain |\n|---|---|---|---|---|")
    found = {name: representations(encoder, images) for name, encoder in (("trained", trained), ("init", untrained))}
    for features in found["trained"]:
        top1 = {
            name: probe(found[name][features], labels, test_size=0.2, knn_k=30, max_iter=1000, seed=args.seed)["top1"]
            for name in found
        }
        print(
            f"| {features} | {found['trained'][features].shape[1]} | {top1['trained']:.4f} | {top1['init']:.4f} | "
            f"{top1['trained'] - top1['init']:+.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
