"""``segtrain bench``: many ``segtrain run``s in a row, and a leaderboard of their test scores.

Two modes:

* **leaderboard** (``run_bench``): every combination of models x losses, or every row of a
  grid CSV whose columns are ``segtrain run`` options, times ``seeds`` seeds. Each run goes
  through :func:`segtrain.trainer.train` exactly as ``segtrain run`` does, in its own folder
  ``<out>/<model>-<loss>-s<seed>`` (grid rows: ``<out>/r<NN>-<model>-<loss>-s<seed>``).
  A run whose ``summary.json`` exists is not run again; one with a ``last.pt`` but no summary
  is resumed. ``leaderboard.csv``/``.md``/``.png`` aggregate the seeds of each combination.
* **speed** (:mod:`segtrain.speed`): per model, train-step and inference images/s and peak
  memory on random tensors, with AMP off and on, no data and no convergence.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from segprep.work import atomic_write_csv, atomic_write_text
from segtrain.config import CONFIG_KEYS, RunConfig, parse_text
from segtrain.errors import SegtrainError

log = logging.getLogger(__name__)

# Options a bench sets itself, so neither a grid column nor a base option may set them.
BENCH_OWNED = ("manifest", "out", "resume", "force")
GRID_KEYS: tuple[str, ...] = tuple(key for key in CONFIG_KEYS if key not in BENCH_OWNED)
_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}

LEADERBOARD_COLUMNS = (
    "rank", "model", "loss", "options", "seeds", "dice_mean", "dice_std", "iou_mean", "iou_std",
    "params", "gmacs", "train_img_s", "infer_img_s", "peak_mem_mb", "wall_s", "runs")


# ----------------------------------------------------------------------------- the plan

@dataclass
class Combination:
    """One leaderboard row: run options shared by its seeds, and what makes it differ."""

    options: dict[str, Any]          # RunConfig overrides (model, loss, lr, ...)
    label: str                       # folder stem: unet-dice or r01-unet-dice
    varied: dict[str, Any] = field(default_factory=dict)  # grid columns other than model/loss


def base_options(manifest: Path | None, config_file: Path | None, given: dict[str, Any], *,
                 speed_only: bool = False) -> tuple[Path | None, dict[str, Any]]:
    """The options every run of a bench shares: a config file's, overridden by those given on
    the command line; and the manifest (the argument, else the config file's)."""
    from segtrain.config import read_config_file

    base = read_config_file(config_file) if config_file is not None else {}
    owned = sorted(k for k in base if k in ("out", "resume"))
    if owned:
        raise SegtrainError(f"{config_file}: {', '.join(owned)} cannot be set for a bench (each run "
                            f"gets its own folder in --out)")
    if manifest is None and base.get("manifest") and not speed_only:
        manifest = Path(base["manifest"])
    base.pop("manifest", None)
    base.update(given)
    if manifest is None and not speed_only:
        raise SegtrainError("a MANIFEST is needed (or --speed-only)")
    return manifest, base


def resolve_combinations(models: Sequence[str], losses: Sequence[str], grid: Path | None
                         ) -> list[Combination]:
    """The bench's rows: a grid file's, or every model with every loss."""
    if grid is not None and (models or losses):
        raise SegtrainError("give either --grid or --models/--losses, not both (a grid row names "
                            "its model and loss)")
    if grid is not None:
        return read_grid(grid)
    return combinations(models or ["unet"], losses or ["bce+dice"])


def normalise_key(key: str) -> str:
    return str(key).strip().replace("-", "_")


def combinations(models: Sequence[str], losses: Sequence[str]) -> list[Combination]:
    """Every model with every loss, models outermost. ``unet:resnet34`` is a decoder on an
    encoder (the encoder's ImageNet weights then come from the base options, e.g. a config file
    with ``encoder_weights: imagenet``)."""
    out = []
    for name in models:
        model, _, encoder = name.partition(":")
        options = {"model": model, **({"encoder": encoder} if encoder else {})}
        label = f"{model}-{encoder}" if encoder else model
        out += [Combination(options={**options, "loss": loss}, label=f"{label}-{loss}") for loss in losses]
    return out


def read_grid(path: Path) -> list[Combination]:
    """The rows of a grid CSV as combinations. Columns are ``segtrain run`` options
    (``batch-size`` or ``batch_size``); an empty cell keeps the bench's value."""
    path = Path(path)
    if not path.is_file():
        raise SegtrainError(f"{path}: grid file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SegtrainError(f"{path}: not a readable CSV ({exc})") from None
    columns = {column: normalise_key(column) for column in frame.columns}
    unknown = [column for column, key in columns.items() if key not in GRID_KEYS]
    if unknown:
        owned = [c for c in unknown if columns[c] in BENCH_OWNED]
        why = f" ({', '.join(owned)} set by the bench itself)" if owned else ""
        raise SegtrainError(f"{path}: unknown column(s) {', '.join(unknown)}{why}; valid columns: "
                            f"{', '.join(GRID_KEYS)}")
    if frame.empty:
        raise SegtrainError(f"{path}: the grid has no rows")
    result = []
    for number, record in enumerate(frame.to_dict("records"), start=1):
        options = {}
        for column, text in record.items():
            if text.strip() == "":
                continue
            key = columns[column]
            try:
                options[key] = parse_text(key, text)
            except SegtrainError as exc:
                raise SegtrainError(f"{path}: line {number + 1}: {exc}") from None
        model = options.get("model", _DEFAULTS["model"])
        loss = options.get("loss", _DEFAULTS["loss"])
        varied = {k: v for k, v in options.items() if k not in ("model", "loss")}
        result.append(Combination(options=options, label=f"r{number:02d}-{model}-{loss}", varied=varied))
    return result


def _folder_name(label: str, seed: int) -> str:
    # + in "bce+dice" is fine on every file system; slashes or spaces in a name are not.
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in f"{label}-s{seed}")


@dataclass
class Job:
    combination: Combination
    seed: int
    config: RunConfig

    @property
    def out(self) -> Path:
        return Path(self.config.out)


def plan(manifest: Path | str, combos: Sequence[Combination], *, seeds: int, out: Path,
         base: dict[str, Any] | None = None) -> list[Job]:
    """One job per combination and seed, every config built (and so validated) before any run.

    ``base`` holds run options shared by every job (a grid row overrides them). Seeds are
    ``base seed, base seed + 1, ...``."""
    from segtrain.losses import LOSSES
    from segtrain.models import build_model, model_spec
    from segtrain.models.encoders import check_encoder_name
    from segtrain.trainer import model_options

    if seeds < 1:
        raise SegtrainError(f"--seeds must be >= 1; got {seeds}")
    base = {normalise_key(k): v for k, v in (base or {}).items() if v is not None}
    bad = sorted(k for k in base if k not in GRID_KEYS)
    if bad:
        raise SegtrainError(f"unknown run option(s) {', '.join(bad)}; valid: {', '.join(GRID_KEYS)}")
    jobs: list[Job] = []
    checked: set[str] = set()
    for combo in combos:
        options = {**base, **combo.options}
        model = options.get("model", _DEFAULTS["model"])
        loss = options.get("loss", _DEFAULTS["loss"])
        model_spec(model, options.get("encoder"))  # an unknown name lists the valid ones
        if options.get("encoder") is not None:
            check_encoder_name(options["encoder"])
        if loss not in LOSSES:
            raise SegtrainError(f"unknown loss {loss!r}; valid losses: {', '.join(LOSSES)}")
        first_seed = int(options.pop("seed", _DEFAULTS["seed"]))
        for k in range(seeds):
            seed = first_seed + k
            config = RunConfig(manifest=str(manifest), **options, seed=seed,
                               out=str(Path(out) / _folder_name(combo.label, seed)))
            kwargs = model_options(config)
            kwargs.pop("encoder_weights", None)  # checked when the run builds it, not read now
            key = json.dumps([config.model, kwargs], sort_keys=True, default=str)
            if key not in checked:  # a wrong model option fails now, not after hours of runs
                checked.add(key)
                with torch.device("meta"):
                    build_model(config.model, **kwargs)
            jobs.append(Job(combo, seed, config))
    folders = [job.out for job in jobs]
    if len(set(folders)) != len(folders):
        raise SegtrainError("two combinations would share a run folder; make the models/losses unique")
    return jobs


# ----------------------------------------------------------------------------- running

def _config_differences(job: Job) -> list[str]:
    """Options of a finished run that differ from what this bench asks for (for a warning)."""
    path = job.out / "config.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    wanted = job.config.to_dict()
    return [f"{key} {stored.get(key)!r} (now {value!r})" for key, value in wanted.items()
            if key not in ("resume", "out", "manifest", "workers") and key in stored and stored[key] != value]


def run_jobs(jobs: Sequence[Job], *,
             train: Callable[[RunConfig], dict[str, Any]] | None = None,
             on_start: Callable[[int, int, Job, str], None] | None = None,
             on_done: Callable[[int, int, Job, dict[str, Any] | None, str | None], None] | None = None,
             on_epoch: Callable[[Job, dict[str, float]], None] | None = None,
             ) -> list[tuple[Job, dict[str, Any] | None, str | None]]:
    """Run (or reuse) every job, one after another. Returns ``(job, summary, error)`` triples.

    A job whose run folder holds ``summary.json`` is reused; one with ``last.pt`` is resumed;
    otherwise it starts afresh. A run that fails with an expected error (a NaN loss, a model
    that cannot take the size) is recorded and the bench goes on; re-running the bench retries it.
    ``on_start(i, n, job, action)`` gets action ``run``/``resume``, ``on_done`` the outcome,
    ``on_epoch(job, row)`` every epoch's history row (so a long bench shows it is alive).
    """
    from segprep.errors import SegprepError

    if train is None:
        from segtrain.trainer import train
    results = []
    for i, job in enumerate(jobs, start=1):
        summary_path = job.out / "summary.json"
        if summary_path.is_file():
            try:
                summary = json.loads(summary_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                summary = None  # written atomically, so only a hand-edited file gets here
            if summary is not None:
                differences = _config_differences(job)
                if differences:
                    log.warning("%s: reusing a finished run whose options differ: %s; delete the folder "
                                "to run it again", job.out, ", ".join(differences))
                results.append((job, summary, None))
                if on_done is not None:
                    on_done(i, len(jobs), job, summary, None)
                continue
        action = "resume" if (job.out / "last.pt").is_file() else "run"
        job.config.resume = action == "resume"
        if on_start is not None:
            on_start(i, len(jobs), job, action)
        log.info("[%d/%d] %s %s", i, len(jobs), action, job.out)
        try:
            if on_epoch is None:
                summary = train(job.config)
            else:
                summary = train(job.config, on_epoch=lambda row, job=job: on_epoch(job, row))
            error = None
        except SegprepError as exc:  # SegtrainError is one too
            summary, error = None, str(exc)
            log.warning("%s failed: %s", job.out, error)
        results.append((job, summary, error))
        if on_done is not None:
            on_done(i, len(jobs), job, summary, error)
    return results


def _gmacs(summary: dict[str, Any], cache: dict[str, float | None]) -> float | None:
    from segtrain.models import model_info

    size = summary.get("input_size")
    kwargs = {k: v for k, v in (summary.get("model_kwargs") or {}).items() if v is not None}
    key = json.dumps([summary.get("model"), size, kwargs], sort_keys=True, default=str)
    if key not in cache:
        try:
            macs = model_info(summary["model"], size=tuple(size), **kwargs)["macs"]
            cache[key] = None if macs is None else macs / 1e9
        except Exception as exc:  # noqa: BLE001  a leaderboard column must not sink the bench
            log.warning("cannot count MACs of %s at %s: %s", summary.get("model"), size, exc)
            cache[key] = None
    return cache[key]


def _mean(values: Iterable[float | None]) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else math.nan


def _std(values: list[float]) -> float:
    # spread over seeds: sample standard deviation; undefined for one seed
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _format_options(varied: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, separators=(',', ':')) if isinstance(v, (dict, list)) else v}"
                    for k, v in varied.items())


def leaderboard(results: Sequence[tuple[Job, dict[str, Any] | None, str | None]]) -> pd.DataFrame:
    """One row per combination, seeds aggregated, sorted by mean test Dice (best first).

    Failed combinations (no seed finished) come last with empty scores; ``runs`` counts the
    finished seeds of each."""
    groups: dict[int, list[tuple[Job, dict[str, Any] | None, str | None]]] = {}
    order: list[Combination] = []
    for job, summary, error in results:
        key = id(job.combination)
        if key not in groups:
            groups[key] = []
            order.append(job.combination)
        groups[key].append((job, summary, error))
    macs_cache: dict[str, float | None] = {}
    rows = []
    for combo in order:
        entries = groups[id(combo)]
        done = [s for _, s, _ in entries if s is not None]
        first = entries[0][0].config
        dice = [s["test"]["mean"]["dice"] for s in done]
        iou = [s["test"]["mean"]["iou"] for s in done]
        rows.append({
            "model": first.model, "loss": first.loss, "options": _format_options(combo.varied),
            "seeds": len(entries), "runs": len(done),
            "dice_mean": _mean(dice), "dice_std": _std(dice),
            "iou_mean": _mean(iou), "iou_std": _std(iou),
            "params": done[0].get("parameters") if done else None,
            "gmacs": _gmacs(done[0], macs_cache) if done else None,
            "train_img_s": _mean(s.get("train_images_per_s") for s in done),
            "infer_img_s": _mean(s.get("inference_images_per_s") for s in done),
            "peak_mem_mb": _mean(s.get("peak_gpu_memory_mb") for s in done),
            "wall_s": _mean(s.get("wall_seconds") for s in done),
            "errors": "; ".join(sorted({e for _, _, e in entries if e})),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*LEADERBOARD_COLUMNS, "errors"])
    # stable sort: ties keep the order they were given in
    frame = frame.sort_values("dice_mean", ascending=False, na_position="last", kind="stable")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame[[*LEADERBOARD_COLUMNS, "errors"]].reset_index(drop=True)


def cell(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def gmacs_cell(value: Any) -> str:
    # tiny test models have a few MMACs, real ones tens of GMACs: three significant digits
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if value >= 100 else f"{value:.3g}"


def _row_label(row: pd.Series) -> str:
    label = f"{row['model']} / {row['loss']}"
    return f"{label} ({row['options']})" if row["options"] else label


def format_leaderboard(frame: pd.DataFrame) -> list[list[str]]:
    """Header and rows of the printed (and markdown) leaderboard, as text cells."""
    header = ["#", "model", "loss", "options", "seeds", "test Dice", "test IoU", "params (M)",
              "GMACs", "train img/s", "infer img/s", "peak MB", "wall s"]
    table = [header]
    for _, row in frame.iterrows():
        spread = (lambda m, s: f"{cell(m)} ± {cell(s)}" if not math.isnan(s) else cell(m))
        table.append([
            str(row["rank"]), row["model"], row["loss"], row["options"] or "-",
            f"{row['runs']}/{row['seeds']}" if row["runs"] != row["seeds"] else str(row["seeds"]),
            spread(row["dice_mean"], row["dice_std"]), spread(row["iou_mean"], row["iou_std"]),
            cell(None if row["params"] is None or pd.isna(row["params"]) else row["params"] / 1e6, 3),
            gmacs_cell(row["gmacs"]), cell(row["train_img_s"], 1), cell(row["infer_img_s"], 1),
            cell(row["peak_mem_mb"], 0), cell(row["wall_s"], 1)])
    return table


def text_table(table: list[list[str]]) -> str:
    """The printed table (header, a rule, rows) of text cells."""
    return pd.DataFrame(table[1:], columns=table[0]).to_markdown(index=False, tablefmt="simple",
                                                                 disable_numparse=True)


def markdown_table(table: list[list[str]]) -> str:
    """The same table as GitHub markdown (a | in a cell escaped)."""
    rows = [[cell.replace("|", "\\|") for cell in row] for row in table[1:]]
    return pd.DataFrame(rows, columns=table[0]).to_markdown(index=False, tablefmt="github",
                                                                 disable_numparse=True)


def best_line(frame: pd.DataFrame) -> str:
    scored = frame[frame["dice_mean"].notna()]
    if scored.empty:
        return "no combination finished"
    best = scored.iloc[0]
    spread = "" if math.isnan(best["dice_std"]) else f" ± {best['dice_std']:.4f}"
    return (f"best: {_row_label(best)}, test Dice {best['dice_mean']:.4f}{spread} "
            f"(mean over {best['runs']} seed{'s' if best['runs'] != 1 else ''})")


def plot_leaderboard(frame: pd.DataFrame, path: Path, title: str = "segtrain bench") -> Path:
    """Horizontal bars of mean test Dice with the seeds' standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = frame[frame["dice_mean"].notna()]
    labels = [_row_label(row) for _, row in scored.iterrows()][::-1]  # best at the top
    means = scored["dice_mean"].to_numpy(dtype=float)[::-1]
    errors = np.nan_to_num(scored["dice_std"].to_numpy(dtype=float))[::-1]
    height = max(2.0, 0.45 * len(labels) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height), constrained_layout=True)
    ax.barh(range(len(labels)), means, xerr=errors, color="#4c72b0", capsize=3)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("test Dice (mean over images; bars: mean over seeds, whiskers: std)")
    ax.set_title(title)
    for y, (value, error) in enumerate(zip(means, errors)):
        ax.text(min(value + error + 0.01, 0.93), y, f"{value:.3f}", va="center", fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# A test split this small measures Dice to within a few hundredths: rows closer than that
# are not ranked by the data (the standard error of a mean Dice of ~0.1 spread over n images).
SMALL_TEST = 30


def small_test_warning(n_test: int) -> str:
    """A warning line for a leaderboard measured on few test images, or ""."""
    if n_test >= SMALL_TEST:
        return ""
    return (f"WARNING: the test split has {n_test} image(s): test Dice is uncertain by about "
            f"{0.2 / max(n_test, 1) ** 0.5:.2f} (twice the standard error of a mean of per-image "
            f"Dice spread 0.1); closer rows are not told apart")


def write_leaderboard(frame: pd.DataFrame, out: Path, *, title: str = "", n_test: int | None = None
                      ) -> dict[str, Path]:
    """``leaderboard.csv`` (every column, full precision), ``leaderboard.md`` (the printed table
    and the best row, with a warning when the test split is small) and ``leaderboard.png``,
    each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "leaderboard.csv", "md": out / "leaderboard.md", "png": out / "leaderboard.png"}
    atomic_write_csv(paths["csv"], frame, float_format="%.6g")
    failed = frame[frame["errors"] != ""]
    warning = small_test_warning(n_test) if n_test is not None else ""
    text = [f"# {title or 'segtrain bench'}", "", markdown_table(format_leaderboard(frame)), "",
            best_line(frame) + ".", ""] + ([warning, ""] if warning else [])
    if len(failed):
        text += ["Failed runs:", ""] + [f"- {_row_label(r)}: {r['errors']}" for _, r in failed.iterrows()] + [""]
    text += ["Test Dice and IoU: mean over test images of each run, then mean ± std over seeds. "
             "GMACs: one image at the training size. Speeds and wall time: mean over seeds.", ""]
    atomic_write_text(paths["md"], "\n".join(text))
    plot_leaderboard(frame, paths["png"], title=title or "segtrain bench")
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def test_count(table: pd.DataFrame) -> int:
    from segprep.manifest import active
    return len(active(table, "test"))


def dataset_title(table: pd.DataFrame, manifest: Path) -> str:
    """What the leaderboard was measured on: the manifest's sources and where it is."""
    sources = ", ".join(dict.fromkeys(table["source"])) or "no samples"
    return f"segtrain bench: {sources} ({test_count(table)} test images; {manifest})"


def run_bench(manifest: Path | str, combos: Sequence[Combination], *, seeds: int, out: Path,
              base: dict[str, Any] | None = None, **hooks: Any) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Plan, run (or reuse) every job, write the leaderboard files. ``hooks`` go to ``run_jobs``."""
    from segprep.manifest import read_manifest

    table = read_manifest(Path(manifest))  # a bad manifest is one error now, not one failure per run
    jobs = plan(manifest, combos, seeds=seeds, out=out, base=base)
    results = run_jobs(jobs, **hooks)
    frame = leaderboard(results)
    paths = write_leaderboard(frame, out, title=dataset_title(table, Path(manifest)),
                              n_test=test_count(table))
    return frame, paths


# ----------------------------------------------------------------------------- speed only
