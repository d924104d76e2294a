"""The ``segtrain`` command. Sub-commands are imported lazily so ``--help`` stays instant."""

from __future__ import annotations

import click

from segprep import __version__
from segprep.lazycli import LazyGroup, setup_logging

COMMANDS = {
    "models": "segtrain.cli.models:models",
    "encoders": "segtrain.cli.encoders:encoders",
    "run": "segtrain.cli.run:run",
    "predict": "segtrain.cli.predict:predict",
    "bench": "segtrain.cli.bench:bench",
    "export": "segtrain.cli.export:export",
    "qc": "segtrain.cli.qc:qc",
}
# What `segtrain --help` shows per command (without importing it).
SHORT_HELP = {
    "models": "List the models: name, paper, parameters and GMACs.",
    "encoders": "List the timm encoders the decoders take.",
    "run": "Train one model, keep the best epoch on val, evaluate on test.",
    "predict": "Predict masks and overlays for images, folders or manifests.",
    "bench": "Models x losses leaderboard, or images/s per model (--speed-only).",
    "export": "Export a run to ONNX or TorchScript, checked against PyTorch.",
    "qc": "Score every label against out-of-sample predictions (K-fold).",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, short_help=SHORT_HELP,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segtrain")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Train, evaluate and benchmark U-Net-family models from segprep manifests."""
    setup_logging(verbose)
