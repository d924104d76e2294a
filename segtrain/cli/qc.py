"""``segtrain qc``: parse options, call :func:`segtrain.qc.qc`, print the summary."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--out", "work", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="WORK folder: qc/ (folds, probabilities, scores.csv, findings.csv) goes there.")
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True,
              help="Folds by group; each sample is predicted by the model that did not train on it.")
@click.option("--probs", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Score against these probabilities instead of training: a folder with "
                   "index.csv (sample_id, shard, index) and segprep variable shards holding "
                   "p x 255 (uint8) in masks/<index>, as qc/probs/ of an earlier run.")
@click.option("--model", default="unet", show_default=True, help="Model of the fold trainings.")
@click.option("--encoder", default=None, help="timm encoder (e.g. efficientnet_lite0).")
@click.option("--encoder-weights", default=None, help="imagenet, a local file, or none.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True,
              help="Training size (square); predictions are scored at each sample's own size.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--below", type=click.FloatRange(0, 1), default=None,
              help="label_disagrees under this label quality [default: segtrain.qc.DISAGREE_BELOW].")
def qc(manifest: Path, work: Path, folds: int, probs: Path | None, model: str, encoder: str | None,
       encoder_weights: str | None, epochs: int, size: int, batch_size: int, lr: float, device: str,
       workers: int, seed: int, below: float | None) -> None:
    """Find label errors that rules cannot see: K-fold cross-fitting over MANIFEST's train and
    val rows by group, out-of-sample probabilities for every sample, and per-sample scores
    (soft-minimum pixel self-confidence, Dice, area ratio, missed and extra objects) with
    findings in clean's format (flagged, never excluding).

    \b
    Examples:
      segtrain qc work/manifests/clean.csv -o work --encoder efficientnet_lite0 --encoder-weights imagenet --epochs 3
      segtrain qc work/manifests/clean.csv -o work --probs my-model-probs/
      segprep clean work/manifests/ingest.csv --qc work/qc/findings.csv
    """
    from segtrain.qc import DISAGREE_BELOW
    from segtrain.qc import qc as run_qc

    result = run_qc(manifest, work, folds=folds, probs=probs, model=model, encoder=encoder,
                    encoder_weights=encoder_weights, epochs=epochs, size=size,
                    batch_size=batch_size, lr=lr, device=device, workers=workers, seed=seed,
                    below=DISAGREE_BELOW if below is None else below)
    click.echo(result.summary())
