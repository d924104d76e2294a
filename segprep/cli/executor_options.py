"""``--executor`` and ``--scheduler``, shared by the stages that run blocks (ingest, clean, augment)."""

from __future__ import annotations

from collections.abc import Callable

import click

EXECUTOR_KINDS = ("local", "dask")


def executor_options(command: Callable) -> Callable:
    """Add ``--executor local|dask`` and ``--scheduler ADDRESS`` to a stage command."""
    command = click.option(
        "--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None, metavar="ADDRESS",
        help="Dask scheduler address (tcp://HOST:8786; or DASK_SCHEDULER_ADDRESS) for --executor "
             "dask; without one, a LocalCluster of --workers processes starts on this machine. "
             "WORK must be on a filesystem every worker mounts at the same path.")(command)
    command = click.option(
        "--executor", type=click.Choice(EXECUTOR_KINDS), default="local", show_default=True,
        help="Where the blocks run: local worker processes, or a Dask cluster (pip install "
             "'segkit[dask]'); the output is the same bytes.")(command)
    return command


def announce(line: str) -> None:
    """A line about where the work runs (the Dask dashboard), on stderr beside the progress bar."""
    click.echo(line, err=True)
