"""``segtrain models``: list the registered models with their papers, parameters and GMACs."""

from __future__ import annotations

import json
import time

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Side of the square input the GMACs column is computed for.")
def models(as_json: bool, size: int) -> None:
    """List every model: name, paper, parameters and GMACs (default widths, 3 channels, 1 class).
    Decoders that take a pretrained encoder are listed as DECODER:ENCODER with their default
    encoder; any timm encoder fits (`segtrain encoders`, `segtrain run --model unet --encoder NAME`).

    Models are built on the meta device, so nothing is allocated; the table is cached (in
    ~/.cache/segkit) until the models' code changes. GMACs count convolutions and matrix
    products of one eval-mode forward pass.

    \b
    Example:
      segtrain models --size 352
    """
    from segtrain.catalog import model_table

    start = time.perf_counter()
    rows = model_table(size)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("name", "paper", "params (M)", f"GMACs @{size}")
    table = [(r["name"], r["paper"], f"{r['params'] / 1e6:.2f}",
              "-" if r["macs"] is None else f"{r['macs'] / 1e9:.2f}") for r in rows]
    widths = [max(len(row[i]) for row in (header, *table)) for i in range(len(header))]
    for i, row in enumerate((header, *table)):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                 row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        click.echo("  ".join(cells).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))
    skipped = [r["name"] for r in rows if r["macs"] is None]
    note = f"; '-': {size} not divisible by the model's stride" if skipped else ""
    click.echo(f"{len(rows)} models; GMACs for one 3x{size}x{size} image{note} "
               f"(DECODER:ENCODER: --model DECODER --encoder ENCODER, any of `segtrain encoders`) "
               f"({time.perf_counter() - start:.1f}s)")
