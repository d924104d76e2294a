"""Checks that judge a sample against the other samples of its source: misaligned, inverted,
area_outlier, and whether a source's empty masks are negatives.

What is typical depends on the dataset (polyp edges are faint, lesion colours vary between
datasets, some datasets have many empty frames), so each check learns it from the source
itself: robust z-scores (median / MAD) of the per-sample measurements of
:mod:`segprep.checks.alignment`, or the source's summed colour histograms. Sources with fewer
than :data:`MIN_SOURCE_SAMPLES` usable samples are not judged (inverted falls back to geometry).

Everything here is a heuristic: a finding is flagged, never excluded, unless ``--strict``
(docs/CLEAN.md, "Exclusion policy").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segprep.checks.alignment import robust_z
from segprep.checks.findings import Finding
from segprep.checks.options import CleanOptions
from segprep.checks.registry import register

MIN_SOURCE_SAMPLES = 8
# Scale floors of the robust z-scores (see robust_z): a source whose scores are all alike
# must not turn a tiny difference into a flag.
PLACEMENT_Z_FLOOR = 0.05   # log units of the ring/edge placement ratios
THIN_Z_FLOOR = 0.1         # log units of a thin structure's edge alignment
AREA_Z_FLOOR = 0.25        # logit units of the foreground fraction
# A sample judged misaligned against its source must also score well below its own
# near-identical images (video frames of one scene), if it has any: a whole sequence with
# faint edges is the scene, not the masks. In z units of the misalignment score.
NEIGHBOUR_DROP = 2.0
# inverted: how far the colour evidence must point the other way, as a share of how far it
# points the right way for the source's typical mask (the median over its masks), depending on
# how much of the frame's border the mask covers. The background surrounds the object, so an
# inverted mask runs along the frame's border; a real object whose colours resemble the
# background does not (real Kvasir-SEG: all 100 masks with contrary evidence cover 6% of the
# border or less, the most contrary reaching 2.3 times the typical evidence in reverse).
INVERTED_MARGIN = 1.0         # in the middle of the frame, with a complement of a known area
BORDER_MARGIN = 0.5           # along at least BORDER_SHARE of the border
BORDER_SHARE = 0.2
# A source whose empty masks are at least this share of it (and two or more) has negative
# images: its empty masks are kept, not excluded.
NEGATIVE_SHARE = 0.05


@dataclass
class SourceSample:
    """What the source checks need of one sample (``ring``/``edge``: placement ratios,
    NaN when not measured; ``colour_in``/``colour_out``: Lab histograms of the content)."""

    fg_fraction: float
    border_share: float
    ring: float
    edge: float
    colour_in: np.ndarray | None
    colour_out: np.ndarray | None
    empty: bool
    thin_edge: float = float("nan")   # thin structures: edge_alignment (alignment.py)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def misalignment_scores(samples: list[SourceSample], index: np.ndarray) -> np.ndarray:
    """Per sample of ``index``: the sum of the negative robust z-scores of log ring and log edge
    within these samples (0 = placed as well as is typical; very negative = a move of the mask
    would fit the image far better, as is typical of none); for thin structures, the robust
    z-score of log edge alignment among the source's thin masks. NaN where not measured."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ring = np.log(np.array([samples[i].ring for i in index], np.float64))
        edge = np.log(np.array([samples[i].edge for i in index], np.float64))
        thin = np.log(np.array([samples[i].thin_edge for i in index], np.float64))
    scores = np.full(len(index), np.nan)
    measured = np.isfinite(ring) & np.isfinite(edge)
    if measured.sum() >= MIN_SOURCE_SAMPLES:
        z_ring = robust_z(ring[measured], PLACEMENT_Z_FLOOR)
        z_edge = robust_z(edge[measured], PLACEMENT_Z_FLOOR)
        scores[measured] = np.minimum(z_ring, 0) + np.minimum(z_edge, 0)
    measured = np.isfinite(thin)
    if measured.sum() >= MIN_SOURCE_SAMPLES:
        scores[measured] = np.minimum(robust_z(thin[measured], THIN_Z_FLOOR), 0)
    return scores


@register("inverted", "source", "warning", "flagged", "colour evidence / the source's typical",
          "inside looks like the source's background and outside like its foreground; flagged "
          "(--repair-inverted: inverted; --strict: excluded)", worst="low", explains_others=True)
def find_inverted(samples: list[SourceSample], index: np.ndarray, source: str,
                  near: dict[int, list[int]], opts: CleanOptions) -> list[tuple[int, Finding]]:
    """Masks whose outside looks like the source's foreground and inside like its background
    (by the source's summed colour histograms, leaving the sample out), by a margin that
    shrinks the more the mask has the geometry of an inverted one:

    * in the middle of the frame: strongly (INVERTED_MARGIN), and with a complement whose area
      the source knows (within --area-z, or at least as typical as the mask's own): a tiny polyp
      the colour of its mucosa is not inverted into one covering 98% of the frame when the
      source's polyps cover 10%;
    * along BORDER_SHARE of the frame's border or more: by BORDER_MARGIN;
    * over most of the frame and nearly all of its border (--inverted-fg, --inverted-border):
      at all.

    A lesion that fills the frame touches the border too, but its colours say it is one.
    Sources without enough samples to learn colours from fall back to the geometry alone, and
    flag too."""
    action = ("repaired" if opts.repair_inverted and opts.repair else
              "excluded" if opts.strict else "flagged")
    usable = [i for i in index.tolist() if not samples[i].empty and samples[i].colour_in is not None]
    out = []
    if len(usable) < MIN_SOURCE_SAMPLES:
        for i in usable:
            s = samples[i]
            if s.fg_fraction > opts.inverted_fg and s.border_share > opts.inverted_border:
                out.append((i, Finding(
                    "inverted", "warning", round(s.fg_fraction, 4),
                    f"foreground covers {s.fg_fraction:.0%} of the frame and {s.border_share:.0%} "
                    f"of its border ({source} has too few samples to judge by colour)", action=action)))
        return out
    inside = np.array([samples[i].colour_in for i in usable], np.float64)
    outside = np.array([samples[i].colour_out for i in usable], np.float64)
    fg_total, bg_total = inside.sum(0), outside.sum(0)
    evidence = np.empty(len(usable))
    for k in range(len(usable)):
        # leave the sample itself out of the model it is judged by
        fg = fg_total - inside[k] + 1.0
        bg = bg_total - outside[k] + 1.0
        weight = np.log(fg / fg.sum()) - np.log(bg / bg.sum())
        n_in, n_out = inside[k].sum(), outside[k].sum()
        evidence[k] = ((inside[k] @ weight) / n_in if n_in else 0.0) - \
                      ((outside[k] @ weight) / n_out if n_out else 0.0)
    typical = float(np.median(evidence))
    if typical <= 0:  # the colours do not tell foreground from background in this source
        return out
    logit_fg = _logit(np.array([samples[i].fg_fraction for i in usable]))
    z_own = np.abs(robust_z(logit_fg, AREA_Z_FLOOR))
    # logit(1 - p) = -logit(p): the complement, judged by the same median and spread
    z_complement = np.abs(robust_z(-logit_fg, AREA_Z_FLOOR, reference=logit_fg))
    for k, i in enumerate(usable):
        s = samples[i]
        if s.fg_fraction > opts.inverted_fg and s.border_share > opts.inverted_border:
            margin = 0.0
        elif s.border_share >= BORDER_SHARE:
            margin = BORDER_MARGIN
        elif z_complement[k] <= max(z_own[k], opts.area_z):
            margin = INVERTED_MARGIN
        else:
            continue
        if evidence[k] < 0 and evidence[k] <= -margin * typical:
            fg = s.fg_fraction
            out.append((i, Finding(
                "inverted", "warning", round(float(evidence[k] / typical), 3),
                f"inside looks like {source}'s background and outside like its foreground (colour "
                f"evidence {evidence[k]:+.2f} against {typical:+.2f} typical); foreground "
                f"{fg:.0%}, its complement {1 - fg:.0%}"
                + ("; inverted" if action == "repaired" else ""), action=action)))
    return out


@register("misaligned", "source", "warning", "flagged", "robust z-score sum of the placement ratios",
          "the outline would fit the image far better moved elsewhere, by its source's standard; "
          "flagged (--strict: excluded)", worst="low")
def find_misaligned(samples: list[SourceSample], index: np.ndarray, source: str,
                    near: dict[int, list[int]], opts: CleanOptions) -> list[tuple[int, Finding]]:
    """Masks whose outline would fit the image far better somewhere else, by their source's
    standard. ``near``: each sample's near-identical samples (positions)."""
    scores = misalignment_scores(samples, index)
    score_of = dict(zip(index.tolist(), scores))
    out = []
    action = "excluded" if opts.strict else "flagged"
    for i, score in zip(index.tolist(), scores):
        if not np.isfinite(score) or score >= -opts.misaligned_z:
            continue
        around = [score_of[j] for j in near.get(i, []) if np.isfinite(score_of.get(j, np.nan))]
        if around and score > float(np.median(around)) - NEIGHBOUR_DROP:
            continue
        s = samples[i]
        if np.isfinite(s.thin_edge):
            what = (f"the outline follows image edges less than {source}'s do (edge alignment "
                    f"{s.thin_edge:.2f}")
        else:
            what = (f"the outline fits the image worse than the same outline moved elsewhere "
                    f"(colour contrast {s.ring:.2f}, edge strength {s.edge:.2f} of the best move")
        out.append((i, Finding(
            "misaligned", "warning", round(float(score), 3),
            f"{what}; score {score:.1f} against {source}'s typical 0)"
            + (f"; its near-identical images score {np.median(around):.1f}" if around else ""),
            action=action)))
    return out


@register("area_outlier", "source", "warning", "flagged", "robust z of logit(fg fraction)",
          "foreground fraction far outside its source's distribution; flagged", worst="abs")
def find_area_outliers(samples: list[SourceSample], index: np.ndarray, source: str,
                       near: dict[int, list[int]], opts: CleanOptions) -> list[tuple[int, Finding]]:
    nonempty = np.array([i for i in index.tolist() if samples[i].fg_fraction > 0], np.int64)
    if len(nonempty) < MIN_SOURCE_SAMPLES:
        return []
    fg = np.array([samples[i].fg_fraction for i in nonempty])
    z = robust_z(_logit(fg), AREA_Z_FLOOR)
    median = float(np.median(fg))
    return [(int(i), Finding("area_outlier", "warning", round(float(value), 3),
                             f"foreground {samples[i].fg_fraction:.1%} against {median:.1%} typical "
                             f"for {source} (robust z {value:+.1f})"))
            for i, value in zip(nonempty, z) if abs(value) > opts.area_z]


def has_negatives(samples: list[SourceSample], index: np.ndarray) -> bool:
    """Whether a source's empty masks are common enough to be negative images, not mistakes."""
    empty = sum(samples[i].empty for i in index.tolist())
    return empty >= 2 and empty >= NEGATIVE_SHARE * len(index)

