"""``segprep inspect MANIFEST`` and ``segprep verify MANIFEST``."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
def inspect(manifest: Path) -> None:
    """Summarise a manifest: per source and split, count, sizes, foreground fraction
    quartiles, status and issue counts.

    \b
    Example:
      segprep inspect work/manifests/ingest.csv
    """
    from segprep.inspect import inspect_manifest

    click.echo(inspect_manifest(manifest).summary())


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
def verify(manifest: Path) -> None:
    """Check that every row resolves to a readable sample of the recorded size and checksum;
    name each row that does not (exit 1 if any).

    \b
    Example:
      segprep verify work/manifests/ingest.csv
    """
    from segprep.inspect import verify as run_verify

    result = run_verify(manifest)
    for line, sample_id, problem in result.failures:
        click.echo(f"line {line} {sample_id}: {problem}")
    bad = len({sample_id for _, sample_id, _ in result.failures})
    click.echo(f"{manifest}: {result.n_rows - bad} of {result.n_rows} rows verified"
               + ("" if result.ok else f", {bad} failed"))
    if not result.ok:
        sys.exit(1)
