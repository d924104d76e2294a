"""``segtrain bench``: a models x losses (or grid) leaderboard, or ``--speed-only`` timings."""

from __future__ import annotations

import time
from pathlib import Path

import click

from segtrain.cli.run import run as _run_command

# Every `segtrain run` option except those a bench decides per run (model, loss, out, resume).
_RUN_OPTIONS = [p for p in _run_command.params
                if p.name not in ("manifest", "model", "loss", "out", "resume", "force", "config_file")]


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@click.command("bench")
@click.argument("manifest", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--models", help="Comma-separated model names [default: unet; --speed-only: all].")
@click.option("--losses", help="Comma-separated loss names [default: bce+dice].")
@click.option("--grid", type=click.Path(path_type=Path),
              help="CSV whose columns are `segtrain run` options (model, loss, lr, batch_size, ...); "
                   "one combination per row, instead of --models x --losses.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per combination, seeds --seed, --seed+1, ...")
@click.option("-o", "--out", type=click.Path(path_type=Path, file_okay=False),
              help="Bench folder [default: runs/bench-<manifest name>, runs/bench-speed].")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML or JSON file of run options shared by every run (the command line wins).")
@click.option("--speed-only", is_flag=True,
              help="No training: per model, train-step and inference images/s and peak memory, AMP off and on.")
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="--speed-only: timed steps per measurement.")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="--speed-only: untimed steps first (cudnn autotuning, allocator).")
def bench(manifest: Path | None, models: str | None, losses: str | None, grid: Path | None, seeds: int,
          out: Path | None, config_file: Path | None, speed_only: bool, steps: int, warmup: int,
          compile_: bool | None, **options) -> None:
    """Train every combination of --models and --losses (or every row of --grid) on MANIFEST,
    --seeds times each, through the same code as `segtrain run`, and rank them by test Dice.

    Each run gets its own folder in --out; a finished one (summary.json) is not run again and a
    half-finished one is resumed, so an interrupted bench continues where it stopped. Writes
    leaderboard.csv, leaderboard.md and leaderboard.png to --out.

    With --speed-only (no MANIFEST): images/s of a training step and of inference per model on
    random tensors at --size and --batch-size, AMP off and on; writes speed.csv and speed.md.

    \b
    Examples:
      segtrain bench work/manifests/augment.csv --models unet,unetpp --losses bce,dice --seeds 3
      segtrain bench work/manifests/augment.csv --grid my_grid.csv
      segtrain bench --speed-only --size 352 --batch-size 16
    """
    from segprep.manifest import read_manifest
    from segtrain import bench as B
    from segtrain.errors import SegtrainError
    from segtrain.trainer import format_epoch

    options["compile"] = compile_
    given = {key: value for key, value in options.items() if value is not None}
    manifest, base = B.base_options(manifest, config_file, given, speed_only=speed_only)
    start = time.perf_counter()

    if speed_only:
        _speed(models, base, out, steps, warmup, manifest)
        click.echo(f"done in {time.perf_counter() - start:.0f} s")
        return
    combos = B.resolve_combinations(_names(models), _names(losses), grid)
    out = out or Path("runs") / f"bench-{manifest.stem}"
    counts = {"run": 0, "resume": 0, "reused": 0, "failed": 0}
    started_jobs: set[Path] = set()

    def started(i: int, n: int, job, action: str) -> None:
        counts[action] += 1
        started_jobs.add(job.out)
        click.echo(f"[{i}/{n}] {job.out.name}: {'resuming' if action == 'resume' else 'training'} ...")

    def done(i: int, n: int, job, summary, error) -> None:
        if error is not None:
            counts["failed"] += 1
            click.echo(f"[{i}/{n}] {job.out.name}: FAILED: {error}")
            return
        dice = summary["test"]["mean"]["dice"]
        if job.out in started_jobs:
            click.echo(f"[{i}/{n}] {job.out.name}: test Dice {dice:.4f} ({summary['wall_seconds']:.0f} s)")
        else:
            counts["reused"] += 1
            click.echo(f"[{i}/{n}] {job.out.name}: finished earlier, test Dice {dice:.4f}")

    def epoch(job, row: dict) -> None:
        click.echo(f"    {job.out.name}: {format_epoch(row, job.config.epochs)}")

    frame, paths = B.run_bench(manifest, combos, seeds=seeds, out=out, base=base,
                               on_start=started, on_done=done, on_epoch=epoch)
    click.echo("")
    click.echo(B.text_table(B.format_leaderboard(frame)))
    click.echo("")
    click.echo(B.best_line(frame))
    warning = B.small_test_warning(B.test_count(read_manifest(manifest, check_shards=False)))
    if warning:
        click.echo(warning)
    click.echo(f"{len(frame)} combinations x {seeds} seed(s): {counts['run']} trained, {counts['resume']} "
               f"resumed, {counts['reused']} reused, {counts['failed']} failed, in "
               f"{time.perf_counter() - start:.0f} s; leaderboard: {paths['md']} (.csv, .png)")
    if counts["failed"]:
        raise SegtrainError(f"{counts['failed']} run(s) failed (reasons above and in {paths['md']})")


def _speed(models: str | None, base: dict, out: Path | None, steps: int, warmup: int,
           manifest: Path | None) -> None:
    from segtrain import speed as S
    from segtrain.bench import text_table

    plan = S.speed_plan(_names(models), base, manifest)
    size, batch_size = plan["size"], plan["batch_size"]
    out = out or Path("runs") / "bench-speed"
    click.echo(f"timing {len(plan['models'])} model(s) at {size[0]}x{size[1]}, batch {batch_size}, "
               f"{warmup} warm-up + {steps} timed steps each ...")

    def show(row: dict) -> None:
        train = "-" if row["train_img_s"] is None else f"{row['train_img_s']:.1f}"
        infer = "-" if row["infer_img_s"] is None else f"{row['infer_img_s']:.1f}"
        click.echo(f"  {row['model']} amp {row['amp']}: train {train} img/s, infer {infer} img/s"
                   f"{'' if row['status'] == 'ok' else ' (' + row['status'] + ')'}")

    frame = S.speed_benchmark(plan["models"], size=size, batch_size=batch_size, device=plan["device"],
                              steps=steps, warmup=warmup, model_kwargs=plan["model_kwargs"],
                              channels_last=plan["channels_last"], amp=plan["amp"], on_row=show)
    device = frame["device"].iloc[0] if len(frame) else "?"
    paths = S.write_speed(frame, out, title=f"segtrain bench --speed-only: {size[0]}x{size[1]}, batch "
                                            f"{batch_size}, {device}")
    click.echo("")
    click.echo(text_table(S.format_speed(frame)))
    click.echo(f"\n{len(plan['models'])} model(s) on {device}; {paths['md']} (.csv)")


bench.params.extend(_RUN_OPTIONS)
