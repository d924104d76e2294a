"""The run's figures: ``curves.png`` (loss and Dice per epoch) and ``predictions.png`` (the best
and worst test images, ground truth and prediction outlined in two colours).

matplotlib's Agg backend is selected explicitly: runs happen on headless GPU machines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

TRUTH_COLOUR = "#00e676"       # green: ground truth
PREDICTION_COLOUR = "#ff1744"  # red: prediction


def plot_curves(history: list[dict[str, float]], path: Path, best_epoch: int | None = None) -> Path:
    """Train/val loss (left) and val Dice/IoU (right) against the epoch; the best epoch marked."""
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [row["train_loss"] for row in history], "o-", ms=3, label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in history], "o-", ms=3, label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_dice.plot(epochs, [row["val_dice"] for row in history], "o-", ms=3, label="val Dice")
    ax_dice.plot(epochs, [row["val_iou"] for row in history], "o-", ms=3, label="val IoU")
    ax_dice.set(xlabel="epoch", ylabel="score", title="Validation", ylim=(0, 1))
    if best_epoch:
        for ax in (ax_loss, ax_dice):
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    for ax in (ax_loss, ax_dice):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_predictions(panels: list[dict[str, Any]], path: Path, n_best: int | None = None) -> Path:
    """A grid of test images, each with its ground truth and prediction outlined.

    ``panels``: dicts with ``image`` (uint8 H, W, 3), ``mask`` and ``pred`` (bool H, W) and
    ``title``; the first ``n_best`` form the top row ("best"), the rest the bottom row ("worst").
    """
    n_best = len(panels) if n_best is None else n_best
    rows = [panels[:n_best], panels[n_best:]]
    rows = [row for row in rows if row]
    n_cols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(3 * n_cols, 3.3 * len(rows)), squeeze=False,
                             constrained_layout=True)
    for r, (row, label) in enumerate(zip(rows, ("best", "worst") if len(rows) == 2 else ("best",))):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row):
                continue
            panel = row[c]
            ax.imshow(panel["image"])
            height, width = panel["image"].shape[:2]
            for mask, colour in ((panel["mask"], TRUTH_COLOUR), (panel["pred"], PREDICTION_COLOUR)):
                # a zero frame around the mask: a region touching the border (or the whole image)
                # still gets a closed outline, drawn along the image edge
                padded = np.pad(np.asarray(mask, dtype=float), 1)
                if padded.any():
                    ax.contour(np.arange(-1, width + 1), np.arange(-1, height + 1), padded, levels=[0.5],
                               colors=[colour], linewidths=1.5)
            ax.set(xlim=(-0.5, width - 0.5), ylim=(height - 0.5, -0.5))
            ax.set_title(f"{label}: {panel['title']}", fontsize=8)
    handles = [Line2D([], [], color=TRUTH_COLOUR, label="ground truth"),
               Line2D([], [], color=PREDICTION_COLOUR, label="prediction")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
