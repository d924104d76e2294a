"""The ``segprep`` command. Each sub-command lives in its own module and is imported lazily."""

from __future__ import annotations

import click

from segprep import __version__
from segprep.lazycli import LazyGroup, setup_logging

COMMANDS = {
    "synth": "segprep.cli.synth:synth",
    "ingest": "segprep.cli.ingest:ingest",
    "inspect": "segprep.cli.inspect:inspect",
    "verify": "segprep.cli.inspect:verify",
    "clean": "segprep.cli.clean:clean",
    "augment": "segprep.cli.augment:augment",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segprep")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Prepare 2D segmentation datasets: synth -> ingest -> clean -> augment.

    Every stage reads a CSV manifest and writes a new one next to HDF5 shards
    (see docs/FORMATS.md).
    """
    setup_logging(verbose)
