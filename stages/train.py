"""Stage `train`: train the encoder on the examples, augmenting on the fly."""

import argparse
from pathlib import Path

import torch

from contrastlab.infra import params, plots
from contrastlab.infra.files import load_npz, now_stamp, write_csv, write_metrics
from contrastlab.infra.machine import device_record, pick_device, use_cpu_kernels
from contrastlab.infra.stage import run_stage
from contrastlab.methods.encoders import save_encoder
from contrastlab.pipeline.datasets import load_training
from contrastlab.pipeline.train import TrainConfig, train

READS = ("dataset", "loss", "aug", "seed", "cpu_kernels", "model", "split", "train")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder written by the download stage")
    parser.add_argument("--examples", type=Path, required=True, help=".npz written by the examples stage")
    parser.add_argument("--model", type=Path, required=True, help="where to save the encoder weights")
    parser.add_argument(
        "--metrics", type=Path, required=True, help="train metrics (JSON; the rest beside it: files.details_path)"
    )
    parser.add_argument("--loss-csv", type=Path, required=True, help="per-epoch loss for `dvc plots`")
    parser.add_argument("--loss-png", type=Path, required=True)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="training state after each epoch when train.checkpoint is true; removed when done",
    )
    args = parser.parse_args()
    p = params.load(READS)
    use_cpu_kernels(p["cpu_kernels"])  # before any tensor is computed
    config = TrainConfig.from_params(p)
    scenario = f"{p['dataset']} / {p['loss']} / {p['aug']}"

    device = pick_device(p["train"]["device"])
    images, _ = load_training(args.data, p["split"]["validation_per_class"])
    print(
        f"training {scenario} ({config.arch} encoder) on {device}: {config.epochs} epochs, lr {config.lr}, "
        f"batch {config.batch_size}, {config.views} views, {config.precision}, {config.head} head, "
        f"{config.optimizer} {config.schedule}"
    )
    result = train(
        torch.from_numpy(images),
        load_npz(args.examples),
        config,
        device=device,
        checkpoint=args.checkpoint if p["train"]["checkpoint"] else None,
    )

    save_encoder(result.encoder, config.encoder_design(images.shape[1]), args.model)
    args.checkpoint.unlink(missing_ok=True)
    write_metrics(
        args.metrics,
        {
            "epochs": config.epochs,
            "lr": config.lr,
            "final_loss": result.epoch_losses[-1],
            "train_time_s": round(result.train_time_s, 2),
            "images_per_s": round(result.images_per_s, 1),
            "finished": now_stamp(),  # with train_time_s, the MLflow run's start and end
            **device_record(device),
            "precision": config.precision,
            **({"deterministic": config.deterministic} if device.type == "cuda" else {}),  # the CPU always is
            "compiled": result.compiled,
            "warnings": result.warnings,  # e.g. a collapsed encoder: the run stands, but its numbers are suspect
        },
    )
    write_csv(args.loss_csv, ["epoch", "loss"], enumerate(result.epoch_losses, start=1))
    plots.loss_curve(result.epoch_losses, f"training loss: {scenario}", args.loss_png)
    print(f"{result.train_time_s:.0f} s, {result.images_per_s:,.0f} images/s, final loss {result.epoch_losses[-1]:.4f}")
    for warning in result.warnings:
        print(f"warning: {warning}")


if __name__ == "__main__":
    run_stage(main)
