"""Stage `train`: train the encoder on the pairs/triplets, augmenting on the fly."""

import argparse
from pathlib import Path

import torch

from contrastlab.infra import params, plots
from contrastlab.infra.stage import run_stage
from contrastlab.infra.files import load_npz, write_csv, write_json
from contrastlab.pipeline.datasets import load_split
from contrastlab.methods.losses import LossOptions, epochs_and_lr
from contrastlab.methods.encoders import pick_device, save_encoder
from contrastlab.pipeline.train import Recipe, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--pairs", type=Path, required=True, help=".npz written by the pairs stage")
    parser.add_argument("--model", type=Path, required=True, help="where to save the encoder weights")
    parser.add_argument("--metrics", type=Path, required=True, help="train metrics (JSON)")
    parser.add_argument("--loss-csv", type=Path, required=True, help="per-epoch loss for `dvc plots`")
    parser.add_argument("--loss-png", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="training state after each epoch when train.checkpoint is true; removed when done")
    args = parser.parse_args()
    p = params.load("train")
    t = p["train"]
    epochs, lr = epochs_and_lr(p["loss"], t)

    images, _ = load_split(args.data, "train")
    device = pick_device()
    recipe = Recipe(t["optimizer"], t["momentum"], t["weight_decay"], t["schedule"], t["warmup_epochs"])
    print(f"training {params.scenario_name(p)} on {device}: {epochs} epochs, lr {lr}, batch {t['batch_size']}, "
          f"{t['views']} views, {t['precision']}, {t['head']} head, {recipe}")
    result = train(
        torch.from_numpy(images),
        load_npz(args.pairs),
        loss=p["loss"],
        aug=p["aug"],
        epochs=epochs,
        batch_size=t["batch_size"],
        lr=lr,
        views=t["views"],
        precision=t["precision"],
        head=t["head"],
        recipe=recipe,
        options=LossOptions(margin=t["margin"], temperature=t["temperature"]),
        seed=p["seed"],
        device=device,
        checkpoint=args.checkpoint if t["checkpoint"] else None,
    )

    save_encoder(result.encoder, images.shape[1], t["head"], args.model)
    args.checkpoint.unlink(missing_ok=True)
    write_json(args.metrics, {
        "epochs": epochs,
        "lr": lr,
        "final_loss": result.epoch_losses[-1],
        "train_time_s": round(result.train_time_s, 2),
        "images_per_s": round(result.images_per_s, 1),
        "device": device.type,
        "precision": t["precision"],
    })
    write_csv(args.loss_csv, ["epoch", "loss"], enumerate(result.epoch_losses, start=1))
    plots.loss_curve(result.epoch_losses, f"training loss: {params.scenario_name(p)}", args.loss_png)
    print(f"{result.train_time_s:.0f} s, {result.images_per_s:,.0f} images/s, final loss {result.epoch_losses[-1]:.4f}")


if __name__ == "__main__":
    run_stage(main)
