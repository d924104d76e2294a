"""``segtrain export``: a run's best checkpoint as ONNX or TorchScript, with a parity check."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The model file to write (model.onnx, model.pt).")
@click.option("--format", "fmt", type=click.Choice(("onnx", "torchscript")), default="onnx",
              show_default=True)
@click.option("--checkpoint", "which", type=click.Choice(("best", "last")), default="best",
              show_default=True, help="Which checkpoint of a run folder.")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="Largest |logit difference| to PyTorch the export may show.")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False),
              help="Manifest whose test images check parity [default: the run's].")
def export(run: Path, out: Path, fmt: str, which: str, tolerance: float, manifest: Path | None) -> None:
    """Export RUN (a `segtrain run` folder, or a checkpoint) for deployment: raw RGB pixels
    (float32, 0-255, NCHW) in, logits out, the normalisation inside; the training size, threshold
    and classes in the model's metadata. Parity with PyTorch is checked with onnxruntime on
    random and real images; the export fails above --tolerance.

    \b
    Example:
      segtrain export runs/unet-bce+dice -o unet.onnx
      segtrain predict --onnx unet.onnx new_images/ -o predictions/
    """
    from segtrain.export import export_model

    report = export_model(run, out, fmt=fmt, which=which, tolerance=tolerance, manifest=manifest)
    for check in report["parity"]:
        click.echo(f"  parity on {check['inputs']} ({check['n']}): max |logit diff| "
                   f"{check['max_abs_diff']:.2e}, mask agreement {check['mask_agreement']:.5f}")
    shape = ("dynamic batch and size" if report["dynamic"] else
             f"fixed size {report['input_size'][0]}x{report['input_size'][1]} ({report['static_because']})")
    click.echo(f"exported {report['model']} ({report['checkpoint']}) to {report['out']} as {fmt}, "
               f"{shape}, in {report['seconds']:.1f} s")
