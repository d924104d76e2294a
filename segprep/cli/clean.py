"""``segprep clean``: parse options, call :func:`segprep.clean.clean`, print the summary."""

from __future__ import annotations

from pathlib import Path

import click

from segprep.cli.executor_options import announce, executor_options

from segprep.checks.options import CleanOptions

_D = CleanOptions()


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--out", "work", type=click.Path(path_type=Path, file_okay=False),
              help="WORK folder for shards/clean-*.h5, manifests/clean.csv and reports/clean/ "
                   "[default: the manifest's WORK, the parent of its manifests/ folder].")
@click.option("--min-area", default=_D.min_area, show_default=True,
              help="speckle: foreground components (8-connected) smaller than this are removed; "
                   "pixels (50, 50px) or a share of the image (0.01%). Thin-structure masks "
                   "(vessels) lose only round blobs that stand apart, never a vessel piece.")
@click.option("--max-hole", default=_D.max_hole, show_default=True,
              help="holes: enclosed background up to this size is filled; pixels or a share of "
                   "the image. Thin-structure masks are never filled.")
@click.option("--threshold", default=str(_D.threshold), show_default=True,
              help="Binarization: mid (half of the mask's scale: 127.5 for 0/255, 0.5 for 0/1 "
                   "label images), otsu, or a grey value 0-255.")
@click.option("--nonbinary-share", default=_D.nonbinary_share, show_default=True, type=float,
              help="nonbinary: report a mask when more than this share of its pixels are grey "
                   f"(between {_D.grey_band:.0%} and {1 - _D.grey_band:.0%} of the scale; JPEG noise "
                   "never is); 0 reports any grey pixel.")
@click.option("--thin-compactness", default=_D.thin_compactness, show_default=True, type=float,
              help="Masks whose largest component's 4*pi*area/perimeter^2 is below this are thin "
                   "structures (vessels): fragments kept, holes not filled.")
@click.option("--allow-empty", is_flag=True,
              help="Keep masks with no foreground (negative frames) instead of excluding them "
                   "(a source where 5% or more of the masks are empty keeps them anyway).")
@click.option("--repair-inverted", is_flag=True,
              help="Invert the masks found inverted (their colours say the inside is background) "
                   "instead of flagging them.")
@click.option("--inverted-fg", default=_D.inverted_fg, show_default=True, type=float,
              help="inverted: a mask over more than this share of the frame ...")
@click.option("--inverted-border", default=_D.inverted_border, show_default=True, type=float,
              help="... and this share of its border needs only some contrary colour evidence "
                   "(and, in sources under 8 samples, none).")
@click.option("--no-repair", is_flag=True,
              help="Report speckle/holes/nonbinary without repairing (masks are still binarized).")
@click.option("--strict", is_flag=True,
              help="Also exclude what heuristics flag: inverted, misaligned, conflict and "
                   "near_duplicate_conflict samples (by default they are flagged, never excluded).")
@click.option("--misaligned-z", default=_D.misaligned_z, show_default=True, type=float,
              help="misaligned: flag when the mask's placement scores (colour contrast and edge "
                   "strength at its place against the same outline moved) sum to a robust "
                   "z-score below minus this, within its source.")
@click.option("--area-z", default=_D.area_z, show_default=True, type=float,
              help="area_outlier: flag when |robust z| of logit(foreground fraction) within its "
                   "source exceeds this.")
@click.option("--phash-distance", default=_D.phash_distance, show_default=True, type=int,
              help="Near-duplicate candidates: perceptual-hash distance in bits (of 64).")
@click.option("--near-min-corr", default=_D.near_min_corr, show_default=True, type=float,
              help="Near-duplicate: minimum correlation of the registered images' fine detail.")
@click.option("--dice-min", default=_D.dice_min, show_default=True, type=float,
              help="(Near-)duplicates whose masks have a Dice below this disagree (conflict).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes [default: all cores]; the output is the same for any number.")
@click.option("--decisions", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="A person's review decisions (keep/exclude/accept_repair per sample_id, as "
                   "`segkit app` writes them), applied over clean's verdicts [default: "
                   "WORK/reviews/decisions.csv when it exists].")
@click.option("--qc", "qc", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="`segtrain qc`'s WORK/qc/findings.csv: its model findings (label_disagrees, "
                   "partial_mask, missed_object, extra_object) are added to the rows, flagged.")
@click.option("--verify", is_flag=True,
              help="Before calling a rerun a no-op, check every clean mask's checksum; without "
                   "it, shard sizes, headers and counts are checked.")
@click.option("--force", is_flag=True,
              help="Redo a finished run (the same input and options again are a no-op; other "
                   "options are an error without --force).")
@executor_options
def clean(manifest: Path, work: Path | None, min_area: str, max_hole: str, threshold: str,
          nonbinary_share: float, thin_compactness: float, allow_empty: bool, repair_inverted: bool,
          inverted_fg: float, inverted_border: float, no_repair: bool,
          strict: bool, misaligned_z: float, area_z: float, phash_distance: int,
          near_min_corr: float, dice_min: float, workers: int | None, decisions: Path | None,
          qc: Path | None, verify: bool, force: bool, executor: str, scheduler: str | None) -> None:
    """Find noisy masks in MANIFEST (ingest.csv or a later one), repair what can be
    repaired with certainty, exclude what is certainly unusable, flag the rest, and write
    WORK/manifests/clean.csv, class-index masks (0/1) in WORK/shards/clean-*.h5,
    WORK/reports/clean/findings.csv and an HTML report (WORK/reports/clean/index.html)
    showing every flagged sample.

    Only unreadable, missing, size-mismatched, exactly duplicated and (where the source has
    no empty images) empty samples are excluded; what a heuristic decides (inverted,
    misaligned, conflicting near duplicates) is flagged unless --strict. Excluded samples
    stay in clean.csv (status=excluded, with their codes); later stages skip them. Codes and
    options: docs/CLEAN.md.

    \b
    Examples:
      segprep clean work/manifests/ingest.csv --strict
      segprep clean work/manifests/ingest.csv --decisions work/reviews/decisions.csv
    """
    from segprep.checks.options import parse_threshold
    from segprep.clean import clean as run_clean
    options = CleanOptions(
        threshold=parse_threshold(threshold), nonbinary_share=nonbinary_share,
        min_area=min_area, max_hole=max_hole, thin_compactness=thin_compactness,
        allow_empty=allow_empty,
        repair_inverted=repair_inverted, inverted_fg=inverted_fg, inverted_border=inverted_border,
        repair=not no_repair, strict=strict,
        misaligned_z=misaligned_z, area_z=area_z, phash_distance=phash_distance,
        near_min_corr=near_min_corr, dice_min=dice_min)
    from segprep.executor import executor_settings

    with executor_settings(executor, scheduler, announce=announce):
        result = run_clean(manifest, work, options, workers=workers, force=force, verify=verify,
                           executor=executor, scheduler=scheduler, decisions=decisions, qc=qc)
    click.echo(result.summary())
