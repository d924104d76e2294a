"""``segtrain predict``: masks and overlays from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from segtrain.config import DEVICES


@click.command("predict")
@click.argument("args", nargs=-1, required=True, type=click.Path(path_type=Path),
                metavar="[CHECKPOINT] INPUTS...")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--onnx", type=click.Path(path_type=Path, dir_okay=False),
              help="Predict with this `segtrain export` ONNX model (onnxruntime) instead of a checkpoint.")
@click.option("--threshold", type=float, default=None,
              help="Foreground probability threshold [default: the run's, usually 0.5].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto = CUDA when available.")
@click.option("--split", type=click.Choice(("train", "val", "test")), default=None,
              help="For manifest inputs: only this split [default: every non-excluded row].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per forward pass.")
def predict(args: tuple[Path, ...], out: Path, onnx: Path | None, threshold: float | None, device: str,
            split: str | None, batch_size: int) -> None:
    """Run CHECKPOINT (best.pt or last.pt of `segtrain run`), or the --onnx model of `segtrain
    export` (same resize and threshold, same masks), on INPUTS: image files, folders or manifests.

    Writes OUT/masks/<name>.png (0/255), OUT/overlays/<name>.png (the image with the predicted
    contour), both at the input's own size, and OUT/predictions.csv.

    \b
    Example:
      segtrain predict runs/unet/best.pt new_images/ -o predictions/
      segtrain predict --onnx unet.onnx new_images/ -o predictions/
    """
    from segtrain.errors import SegtrainError
    from segtrain.predict import predict as run_predict

    checkpoint, inputs = (onnx, args) if onnx is not None else (args[0], args[1:])
    if not inputs:
        raise SegtrainError("give a checkpoint (or --onnx MODEL) and at least one input")

    result = run_predict(checkpoint, list(inputs), out, threshold=threshold, device=device, split=split,
                         batch_size=batch_size)
    for source, reason in result["skipped"]:
        click.echo(f"skipped {source}: {reason}", err=True)
    speed = f", {result['images_per_s']:.1f} images/s" if result["images_per_s"] else ""
    click.echo(f"predicted {result['written']} images ({len(result['skipped'])} skipped) in "
               f"{result['seconds']:.1f} s{speed}; masks and overlays in {result['out']}")
