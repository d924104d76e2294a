"""``segtrain encoders``: the timm models that can be encoders, with their sizes and strides."""

from __future__ import annotations

import json

import click


@click.command("encoders")
@click.argument("pattern", required=False, default="*")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--limit", type=click.IntRange(min=1), default=40, show_default=True,
              help="Describe at most this many matches (each is built to count its parameters).")
def encoders(pattern: str, as_json: bool, limit: int) -> None:
    """List timm models matching PATTERN (fnmatch, e.g. 'resnet*', '*efficientnet*') that can be
    the encoder of unet, attention-unet, unetpp, linknet or fpn: parameters, feature channels
    and strides, and whether ImageNet weights are available offline.

    \b
    Examples:
      segtrain encoders 'resnet*'
      segtrain encoders efficientnet_lite0
    """
    from segtrain.errors import SegtrainError
    from segtrain.models.encoders import encoder_info, list_encoders

    names = list_encoders(pattern)
    if not names:
        raise SegtrainError(f"no timm model matches {pattern!r}; try a wider pattern, e.g. "
                            f"'*{pattern.strip('*')}*'")
    rows = []
    for name in names[:limit]:
        try:
            rows.append(encoder_info(name))
        except SegtrainError as exc:  # not every timm model has feature extraction
            rows.append({"name": name, "error": str(exc)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'encoder':32s} {'params (M)':>10s}  {'strides':18s} {'channels':28s} offline ImageNet")
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']:32s} {'-':>10s}  (no feature extraction)")
            continue
        click.echo(f"{row['name']:32s} {row['params'] / 1e6:10.2f}  {str(row['reductions']):18s} "
                   f"{str(row['channels']):28s} {'yes' if row['offline_imagenet'] else '-'}")
    more = len(names) - len(rows)
    click.echo(f"{len(names)} match(es){f', {more} not shown (--limit)' if more > 0 else ''}. Use one with "
               f"--model unet --encoder NAME [--encoder-weights imagenet|PATH]")
