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
    "export": "segprep.cli.export:export",
}
# What `segprep --help` shows per command (without importing it: that takes seconds).
SHORT_HELP = {
    "synth": "Write a synthetic dataset in a real layout, with known defects.",
    "ingest": "Read raw dataset folders into HDF5 shards and ingest.csv.",
    "inspect": "Summarise a manifest: counts, sizes, foreground per split.",
    "verify": "Check every manifest row: readable, sizes and checksums match.",
    "clean": "Find noisy masks, repair or exclude them; clean.csv + HTML report.",
    "augment": "Multiply the training split offline, resize val/test: augment.csv.",
    "export": "Write a manifest as an nnU-Net v2 dataset or plain PNG folders.",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, short_help=SHORT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segprep")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Prepare 2D segmentation datasets: synth -> ingest -> clean -> augment.

    Every stage reads a CSV manifest and writes a new one next to HDF5 shards
    (see docs/FORMATS.md).
    """
    setup_logging(verbose)
