"""``segprep ingest``: parse options, call :func:`segprep.ingest.ingest`, print the summary."""

from __future__ import annotations

from pathlib import Path

import click

from segprep.cli.executor_options import announce, executor_options


@click.command()
@click.argument("srcs", metavar="SRC...", nargs=-1, required=True,
                type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--out", "work", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="WORK folder: shards/, manifests/ingest.csv and reports/ingest/ go here.")
@click.option("--layout", default="auto", show_default=True,
              help="Layout of every SRC (kvasir-seg, cvc-clinicdb, cvc-colondb, etis-larib, drive, "
                   "ph2, folder, nnunet), or auto to detect each; an unknown name lists them all.")
@click.option("--val", default=0.1, show_default=True, type=float,
              help="Fraction of each source for validation (carved from an official training split).")
@click.option("--test", default=0.1, show_default=True, type=float,
              help="Fraction of each source for test, where it has no official test split.")
@click.option("--seed", "--split-seed", "split_seed", default=0, show_default=True, type=int,
              help="Seed of the group split (--split-seed is the same option).")
@click.option("--splits", "splits_file", type=click.Path(path_type=Path, dir_okay=False),
              help="CSV split list (source,stem,split[,group]), e.g. manifests/kvasir-seg_medico2020.csv.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: all cores]; the output is the same for any number.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=100_000_000, show_default=True,
              help="Largest image or mask decoded (width x height, read from the file's header "
                   "first); a larger file is reported unreadable instead of filling memory.")
@click.option("--verify", is_flag=True,
              help="Before calling a rerun a no-op, check every stored sample's checksum (reads "
                   "everything); without it, shard sizes, headers and counts are checked.")
@click.option("--force", is_flag=True,
              help="Redo everything, even when nothing changed, and replace a finished ingest "
                   "of other sources or options (without it that is an error).")
@executor_options
def ingest(srcs: tuple[Path, ...], work: Path, layout: str, val: float, test: float,
           split_seed: int, splits_file: Path | None, workers: int | None, max_pixels: int,
           verify: bool, force: bool, executor: str, scheduler: str | None) -> None:
    """Read raw dataset folders into HDF5 shards and WORK/manifests/ingest.csv.

    Each SRC is a dataset as downloaded (or a folder holding one); its layout is detected
    unless --layout names it. Unpaired and unreadable files are listed in
    WORK/reports/ingest/; the command fails only when nothing could be ingested.

    \b
    Examples:
      segprep ingest data/synth-kvasir -o work
      segprep ingest Kvasir-SEG -o work --splits manifests/kvasir-seg_medico2020.csv
      segprep ingest big-archive/ -o /shared/work --executor dask --scheduler tcp://head:8786
    """
    from segprep.executor import executor_settings
    from segprep.ingest import ingest as run_ingest

    with executor_settings(executor, scheduler, announce=announce):
        result = run_ingest(list(srcs), work, layout=layout, val=val, test=test,
                            split_seed=split_seed, splits_file=splits_file, workers=workers,
                            force=force, verify=verify, max_pixels=max_pixels, executor=executor,
                            scheduler=scheduler)
    click.echo(result.summary())
