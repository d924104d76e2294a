"""``segprep synth``: write a synthetic dataset in a real dataset's layout, with known defects."""

from __future__ import annotations

import re
from pathlib import Path

import click

from segprep.synth import LAYOUTS, make_dataset


class SizeType(click.ParamType):
    """``HxW`` (e.g. ``256x256``) -> (height, width)."""

    name = "HxW"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a size; expected HxW, e.g. 256x256", param, ctx)
        return int(match[1]), int(match[2])


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(LAYOUTS), default="kvasir-seg", show_default=True,
              help="Which real dataset's folders, file names and formats to copy.")
@click.option("--n", "n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Number of samples (drive: half training, half test).")
@click.option("--size", type=SizeType(), default="256x256", show_default=True,
              help="Image size as HxW.")
@click.option("--noise", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Fraction of samples that get one injected defect each.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed writes the same bytes.")
@click.option("--force", is_flag=True,
              help="Replace an earlier `segprep synth` output in OUT "
                   "(other files are never touched).")
def synth(out: Path, layout: str, n: int, size: tuple[int, int], noise: float, seed: int,
          force: bool) -> None:
    """Write a synthetic dataset into OUT in the exact layout of a real one.

    Images look like the domain (colonoscopy polyps, retinal vessels, skin lesions) and
    every mask border is a visible edge. With --noise, samples get one defect each from:
    nonbinary, speckle, holes, empty, inverted, misaligned, size_mismatch, corrupt_image,
    missing_mask, duplicate, near_duplicate_conflict (drive has no holes).
    OUT/synth_truth.csv lists them; OUT/synth_groups.csv gives each sample's true group
    (video sequence; a copy shares its source's group).

    \b
    Example:
      segprep synth data/synth-kvasir --layout kvasir-seg --n 200 --noise 0.2 --seed 0
    """
    result = make_dataset(out, layout, n=n, size=size, noise=noise, seed=seed, force=force)
    counts = ", ".join(f"{code} {count}" for code, count in result.defect_counts.items())
    click.echo(f"synth: {n} {layout} samples of {size[0]}x{size[1]} (seed {seed}) "
               f"in {result.seconds:.1f} s -> {result.root}")
    click.echo(f"defects: {len(result.truth)} injected" + (f" ({counts})" if counts else ""))
    click.echo(f"truth:   {result.truth_path}")
    click.echo(f"groups:  {result.groups_path}")
