"""``segtrain predict``: masks and overlays from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from segtrain.config import DEVICES


@click.command("predict")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--threshold", type=float, default=None,
              help="Foreground probability threshold [default: the run's, usually 0.5].")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto = CUDA when available.")
@click.option("--split", type=click.Choice(("train", "val", "test")), default=None,
              help="For manifest inputs: only this split [default: every non-excluded row].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per forward pass.")
def predict(checkpoint: Path, inputs: tuple[Path, ...], out: Path, threshold: float | None, device: str,
            split: str | None, batch_size: int) -> None:
    """Run CHECKPOINT (best.pt or last.pt of `segtrain run`) on INPUT image files, folders or manifests.

    Writes OUT/masks/<name>.png (0/255), OUT/overlays/<name>.png (the image with the predicted
    contour), both at the input's own size, and OUT/predictions.csv.

    \b
    Example:
      segtrain predict runs/unet/best.pt new_images/ -o predictions/
    """
    from segtrain.predict import predict as run_predict

    result = run_predict(checkpoint, list(inputs), out, threshold=threshold, device=device, split=split,
                         batch_size=batch_size)
    for source, reason in result["skipped"]:
        click.echo(f"skipped {source}: {reason}", err=True)
    speed = f", {result['images_per_s']:.1f} images/s" if result["images_per_s"] else ""
    click.echo(f"predicted {result['written']} images ({len(result['skipped'])} skipped) in "
               f"{result['seconds']:.1f} s{speed}; masks and overlays in {result['out']}")
