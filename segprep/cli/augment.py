"""``segprep augment``: parse options, call :func:`segprep.augment.augment`, print a summary."""

from __future__ import annotations

import os
from pathlib import Path

import click

from segprep.cli.executor_options import announce, executor_options

from segprep.augment import ASPECTS, BACKENDS, PRESET_NAMES
from segprep.shards import COMPRESSIONS


def _size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} GB"


def _where(path: Path) -> str:
    """Relative to the current folder when inside it, else absolute (never ../../tmp/...)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(Path(path).resolve()) if relative.startswith("..") else relative


@click.command("augment")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--factor", type=int, default=25, show_default=True,
              help="Rows per training sample: variant 0 is the resized original, 1..F-1 augmented.")
@click.option("--size", default="352", show_default=True,
              help="Output size: N (square) or HxW, e.g. 288x384.")
@click.option("--backend", type=click.Choice(BACKENDS), default="albumentations", show_default=True)
@click.option("--preset", default=None, metavar="NAME",
              help=f"Augmentation preset: {', '.join(PRESET_NAMES)} (default: default).")
@click.option("--pipeline", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="An albumentations pipeline saved with albumentations.save (JSON, or YAML "
                   "for .yaml/.yml); replaces --preset.")
@click.option("--aspect", type=click.Choice(ASPECTS), default="resize", show_default=True,
              help="resize: stretch to the size; pad: keep the aspect ratio and pad with black.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default="none", show_default=True,
              help="Compression of the images (masks and ROIs are always gzip level 1). lzf "
                   "saves ~20% on photographs and costs more time than augmenting them.")
@click.option("--image-codec", default="raw", show_default=True, metavar="raw|png|jpeg:Q",
              help="How images are stored: raw pixels (--compression applies), png (lossless), "
                   "or jpeg:Q (lossy, quality Q 1-100; jpeg = jpeg:90); the loader decodes in "
                   "its workers. Bytes and loader speed of each: docs/AUGMENT.md.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; each variant's seed derives from it, the sample and the variant.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: all cores]; the output is the same for any number.")
@click.option("--preview", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write WORK/reports/augment/preview.png with N samples x a few variants.")
@click.option("-o", "--out", "work", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="WORK folder for shards/augment-*.h5, manifests/augment.csv and "
                   "reports/augment/ [default: the manifest's WORK, the parent of its manifests/ "
                   "folder, else the manifest's own folder; as for clean].")
# The option's first name, kept working for scripts written before -o became --out.
@click.option("--work", "work_alias", type=click.Path(path_type=Path, file_okay=False),
              default=None, hidden=True)
@click.option("--verify", is_flag=True,
              help="Before calling a rerun a no-op, check every stored row's checksum (reads "
                   "everything); without it, shard sizes, headers and counts are checked.")
@click.option("--force", is_flag=True,
              help="Redo a finished run (the same options again are a no-op; other options "
                   "are an error without --force).")
@executor_options
def augment(manifest: Path, factor: int, size: str, backend: str, preset: str | None,
            pipeline: Path | None, aspect: str, compression: str, image_codec: str, seed: int,
            workers: int | None,
            preview: int, work: Path | None, work_alias: Path | None, verify: bool,
            force: bool, executor: str, scheduler: str | None) -> None:
    """Augment the training split FACTOR times and resize val/test to SIZE.

    Reads MANIFEST (clean.csv, or ingest.csv), writes WORK/shards/augment-*.h5 (fixed size,
    one chunk per sample) and WORK/manifests/augment.csv. Excluded rows are not carried.
    Details: docs/AUGMENT.md.

    \b
    Example:
      segprep augment work/manifests/clean.csv --factor 25 --size 352 --preview 8
    """
    from segprep.errors import SegprepError

    if work_alias is not None:
        if work is not None and work != work_alias:
            raise SegprepError(f"--out {work} and --work {work_alias} disagree; give --out only")
        work = work_alias
    from segprep.augment.stage import augment as run_augment  # albumentations loads only here

    from segprep.executor import executor_settings

    with executor_settings(executor, scheduler, announce=announce):
        result = run_augment(manifest, factor=factor, size=size, backend=backend, preset=preset,
                             pipeline=pipeline, aspect=aspect, compression=compression,
                             image_codec=image_codec, seed=seed, workers=workers,
                             preview=preview, work=work, force=force, verify=verify,
                             executor=executor, scheduler=scheduler)
    if result.skipped:
        click.echo(f"augment: {_where(result.manifest)} is up to date (finished earlier with the "
                   f"same options); nothing to do. --force redoes it.")
    else:
        splits = result.rows_per_split
        h, w = result.options["size"]
        click.echo(f"augment: {result.rows} rows at {h}x{w}: train {splits['train']} "
                   f"({result.train_samples} samples x {result.factor}), val {splits['val']}, "
                   f"test {splits['test']}")
        click.echo(f"  time: {result.seconds:.1f} s, {result.samples_per_s:.1f} samples/s "
                   f"({result.workers} worker{'s' if result.workers != 1 else ''})")
        if result.rebuilt:
            click.echo(f"  rebuilt: {result.rebuilt} damaged shard(s) of the finished run "
                       f"recomputed, {result.reused_shards} intact ones kept")
        elif result.reused_shards:
            click.echo(f"  resumed: {result.reused_shards} of {len(result.shards)} shards kept "
                       f"from an interrupted run")
    click.echo(f"  shards: {_where(result.work / 'shards')}/augment-*.h5 ({len(result.shards)} "
               f"files, {_size_text(result.bytes)})")
    click.echo(f"  manifest: {_where(result.manifest)}")
    if result.excluded_not_carried:
        click.echo(f"  not carried: {result.excluded_not_carried} excluded rows (they stay in "
                   f"the input manifest)")
    if result.fg_lost:
        click.echo(f"  foreground lost: {result.fg_lost} variants still empty after redraws "
                   f"(fg_lost=1)")
    if result.binarized:
        click.echo(f"  binarized: {result.binarized} raw grey masks (see the warning above)")
    if result.failed:
        click.echo(f"  skipped: {len(result.failed)} unreadable samples, e.g. "
                   f"{result.failed[0][0]}: {result.failed[0][1]}")
    if result.preview is not None:
        click.echo(f"  preview: {_where(result.preview)}")
