"""``segprep export nnunet | folder``: parse options, call :mod:`segprep.export`, print the summary."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("export")
def export() -> None:
    """Hand a manifest's usable samples to other tools: an nnU-Net v2 raw dataset, or plain
    images/ + masks/ folders. Excluded rows never leave.

    \b
    Examples:
      segprep export nnunet work/manifests/clean.csv -o nnUNet_raw --dataset-id 501 --name Kvasir
      segprep export folder work/manifests/clean.csv -o kvasir-folders --mask-values 0,255
    """


@export.command("nnunet")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="nnUNet_raw folder; the dataset goes into OUT/DatasetNNN_NAME/.")
@click.option("--dataset-id", type=int, required=True, help="nnU-Net dataset id, 1-999 (yours: 500+).")
@click.option("--name", required=True, help="Dataset name (letters, digits, - and _).")
@click.option("--labels", help="Comma-separated names of classes 1, 2, ... [default: foreground].")
@click.option("--folds", type=int, default=5, show_default=True,
              help="Folds in splits_final.json, by group; fold 0 is the manifest's own train/val.")
@click.option("--seed", type=int, default=0, show_default=True, help="Order of equal-sized groups in the folds.")
@click.option("--force", is_flag=True, help="Replace an existing DatasetNNN_NAME folder.")
def nnunet(manifest: Path, out: Path, dataset_id: int, name: str, labels: str | None, folds: int,
           seed: int, force: bool) -> None:
    """Write MANIFEST's usable samples as an nnU-Net v2 raw dataset: imagesTr/<case>_0000.png
    (RGB), labelsTr/<case>.png (class indices 0/1, never 0/255), imagesTs/ + labelsTs/ for the
    test split, dataset.json, splits_final.json (folds that keep every group on one side; copy
    it to nnUNet_preprocessed/DatasetNNN_NAME/ before training) and segkit_cases.csv (case id ->
    sample_id, group, split; also a segkit splits file for reading the export back).

    \b
    Example:
      segprep export nnunet work/manifests/clean.csv -o nnUNet_raw --dataset-id 501 --name Kvasir
    """
    from segprep.export import export_nnunet

    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    result = export_nnunet(manifest, out, dataset_id=dataset_id, name=name, labels=names,
                           folds=folds, seed=seed, force=force)
    click.echo(result.summary("nnU-Net export"))
    click.echo(f"next: nnUNetv2_plan_and_preprocess -d {dataset_id} --verify_dataset_integrity, then "
               f"copy {result.out / 'splits_final.json'} into $nnUNet_preprocessed/{result.out.name}/")


@export.command("folder")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Output folder: OUT/<split>/images/, OUT/<split>/masks/, OUT/cases.csv.")
@click.option("--mask-values", help="Pixel value per class, background first [default: 0,255 for "
                                    "two classes, else the class indices].")
@click.option("--force", is_flag=True, help="Replace an existing OUT.")
def folder(manifest: Path, out: Path, mask_values: str | None, force: bool) -> None:
    """Write MANIFEST's usable samples as PNG images and masks per split, for any other tool.

    \b
    Example:
      segprep export folder work/manifests/clean.csv -o kvasir-png --mask-values 0,255
    """
    from segprep.export import export_folder, parse_mask_values

    result = export_folder(manifest, out, mask_values=parse_mask_values(mask_values), force=force)
    click.echo(result.summary("folder export"))
