"""Domain painters: clean synthetic images and their masks, one function per imaging domain.

Every painter is a pure function of its random generator, so a sample can be painted again
(say, as the source of an injected duplicate) instead of keeping every image in memory.
The images only need to look enough like the domain that edge-based checks and a small
network have something real to work with: every mask border is a visible edge in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Sub-pixel drawing: cv2 takes coordinates as fixed point with this many fractional bits.
_SHIFT = 4
_ONE = 1 << _SHIFT


@dataclass
class Painted:
    """One clean sample: RGB uint8 image, uint8 0/255 masks of the same height and width."""

    image: np.ndarray
    mask: np.ndarray
    roi: np.ndarray | None = None    # field of view (fundus only)
    mask2: np.ndarray | None = None  # a second observer's vessel mask (fundus only)


@dataclass
class Branch:
    """A run of a vessel at one width: points as (x, y) floats."""

    points: np.ndarray
    width: int


# ---------------------------------------------------------------------------------------
# shared helpers


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int,
                 octaves: int = 3) -> np.ndarray:
    """Low-frequency noise with unit standard deviation: random grids upsampled and summed."""
    h, w = shape
    out = np.zeros((h, w), np.float32)
    for octave in range(octaves):
        c = cells * 2 ** octave
        grid = rng.standard_normal((c, c)).astype(np.float32)
        out += 0.5 ** octave * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out / max(float(out.std()), 1e-6)


def radius_map(shape: tuple[int, int], center: tuple[float, float], scale: float) -> np.ndarray:
    """Distance of each pixel from ``center`` (y, x), divided by ``scale``."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return np.hypot(yy - center[0], xx - center[1]) / scale


def irregular_blob(rng: np.random.Generator, shape: tuple[int, int], center: tuple[float, float],
                   radii: tuple[float, float], roughness: float) -> np.ndarray:
    """A filled, star-shaped irregular ellipse (never self-intersecting, so never holed)."""
    theta = np.linspace(0, 2 * np.pi, 128, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += rng.uniform(0, roughness) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.55, None)
    angle = rng.uniform(0, np.pi)
    x, y = radii[1] * r * np.cos(theta), radii[0] * r * np.sin(theta)
    xr = center[1] + x * np.cos(angle) - y * np.sin(angle)
    yr = center[0] + x * np.sin(angle) + y * np.cos(angle)
    pts = np.round(np.stack([xr, yr], 1) * _ONE).astype(np.int32)
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [pts], 255, cv2.LINE_8, _SHIFT)
    return mask


def soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A 0..1 float alpha from a 0/255 mask, blurred so painted borders are not aliased."""
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), sigma)


def to_uint8(image: np.ndarray, rng: np.random.Generator, noise_sigma: float) -> np.ndarray:
    """Add sensor noise and quantise; the noise keeps two paintings of one scene unequal."""
    noisy = image + rng.normal(0.0, noise_sigma, image.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# colonoscopy (kvasir-seg, cvc-clinicdb, folder)


def paint_polyp_scene(rng: np.random.Generator,
                      shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pink/red tissue with folds and one or two polyps; float RGB image and 0/255 mask.

    The scene has no camera effects (vignette, noise), so a video can be cut from it by
    moving a crop window and finishing each frame with :func:`finish_endoscope`.
    """
    h, w = shape
    s = min(h, w)
    tissue = np.array([rng.uniform(175, 215), rng.uniform(80, 110), rng.uniform(70, 100)],
                      np.float32)
    shade = smooth_noise(rng, shape, cells=2, octaves=4)
    folds = smooth_noise(rng, shape, cells=4, octaves=2)
    fine = smooth_noise(rng, shape, cells=max(8, s // 8), octaves=1)
    # Zero crossings of a smooth field make thin, winding dark lines: mucosal folds.
    fold_lines = np.exp(-(folds / 0.3) ** 2)
    luminance = 1.0 + 0.10 * shade + 0.03 * fine - 0.07 * fold_lines
    image = tissue * luminance[..., None]
    image[..., 1] += 6.0 * smooth_noise(rng, shape, cells=3, octaves=2)
    image[..., 2] += 6.0 * smooth_noise(rng, shape, cells=3, octaves=2)

    mask = np.zeros(shape, np.uint8)
    n_polyps = 2 if rng.random() < 0.25 else 1
    for _ in range(n_polyps):
        blob = _place_blob(rng, shape, mask, (0.12, 0.22), roughness=0.25)
        if blob is None:
            continue
        image = _paint_polyp(rng, image, blob, tissue, s)
        mask |= blob
    image = _paint_highlights(rng, image, mask, s)
    return image, mask


def _place_blob(rng: np.random.Generator, shape: tuple[int, int], taken: np.ndarray,
                radius_range: tuple[float, float], roughness: float) -> np.ndarray | None:
    """A blob fully inside the frame that keeps clear of ``taken``; None when none fits."""
    h, w = shape
    s = min(h, w)
    keep_out = cv2.dilate(taken, np.ones((5, 5), np.uint8), iterations=max(1, s // 32))
    for _ in range(30):
        ry = rng.uniform(*radius_range) * s
        rx = ry * rng.uniform(0.75, 1.25)
        reach = 1.45 * max(ry, rx)  # a blob's radius wobbles up to ~1.4x
        if 2 * reach >= min(h, w) - 4:
            continue
        center = (rng.uniform(reach + 2, h - reach - 2), rng.uniform(reach + 2, w - reach - 2))
        blob = irregular_blob(rng, shape, center, (ry, rx), roughness)
        if not (blob & keep_out).any():
            return blob
    return None


def _paint_polyp(rng: np.random.Generator, image: np.ndarray, blob: np.ndarray,
                 tissue: np.ndarray, s: int) -> np.ndarray:
    """A raised, paler dome with a dark rim where it meets the mucosa."""
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 3)
    dome = np.sqrt(dist / max(float(dist.max()), 1.0))
    colour = tissue * np.array([rng.uniform(1.06, 1.16), rng.uniform(1.08, 1.3),
                                rng.uniform(1.05, 1.25)], np.float32)
    texture = smooth_noise(rng, blob.shape, cells=max(4, s // 16), octaves=2)
    polyp = colour * ((0.9 + 0.28 * dome) * (1.0 + 0.03 * texture))[..., None]
    alpha = soft(blob, 0.7)[..., None]
    image = image * (1 - alpha) + polyp * alpha
    # The shadow ring is what makes a polyp's outline visible in real frames too.
    rim_width = max(1, s // 64)
    ring = cv2.dilate(blob, np.ones((2 * rim_width + 1,) * 2, np.uint8)) & ~blob
    return image * (1.0 - 0.25 * soft(ring, 0.7))[..., None]


def _paint_highlights(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                      s: int) -> np.ndarray:
    """A few small specular reflections, some of them on the polyps (wet, shiny tissue)."""
    h, w = mask.shape
    spots = np.zeros(mask.shape, np.uint8)
    on_polyp = np.argwhere(mask > 0)
    for _ in range(int(rng.integers(2, 7))):
        if len(on_polyp) and rng.random() < 0.5:
            cy, cx = on_polyp[rng.integers(len(on_polyp))]
        else:
            cy, cx = rng.integers(0, h), rng.integers(0, w)
        axes = (max(1, round(rng.uniform(0.008, 0.025) * s)),
                max(1, round(rng.uniform(0.005, 0.015) * s)))
        cv2.ellipse(spots, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    alpha = soft(spots, 0.8)[..., None]
    return image * (1 - alpha) + 250.0 * alpha


def finish_endoscope(scene: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects of one frame: vignetting, exposure jitter, sensor noise."""
    h, w = scene.shape[:2]
    r = radius_map((h, w), ((h - 1) / 2, (w - 1) / 2), np.hypot(h, w) / 2)
    exposure = rng.uniform(0.96, 1.04)
    return to_uint8(scene * (exposure * (1.0 - 0.5 * r ** 2))[..., None], rng, 2.5)


def paint_polyp(rng: np.random.Generator, shape: tuple[int, int]) -> Painted:
    """A single colonoscopy frame (kvasir-seg, folder)."""
    scene, mask = paint_polyp_scene(rng, shape)
    return Painted(finish_endoscope(scene, rng), mask)


# ---------------------------------------------------------------------------------------
# retinal fundus (drive)


def paint_fundus(rng: np.random.Generator, shape: tuple[int, int]) -> Painted:
    """An orange fundus disk on black, bright optic disc, darker branching vessels, FOV mask."""
    h, w = shape
    s = min(h, w)
    center = (h / 2 + rng.uniform(-0.02, 0.02) * s, w / 2 + rng.uniform(-0.02, 0.02) * s)
    fov_radius = rng.uniform(0.44, 0.47) * s
    rr = radius_map(shape, center, fov_radius)
    roi = np.where(rr <= 1.0, 255, 0).astype(np.uint8)

    side = 1 if rng.random() < 0.5 else -1
    disc = (center[0] + rng.uniform(-0.05, 0.05) * s, center[1] + side * rng.uniform(0.24, 0.3) * s)
    macula = (center[0], center[1] - side * 0.06 * s)
    base = np.array([rng.uniform(170, 215), rng.uniform(80, 115), rng.uniform(40, 70)], np.float32)
    shade = (1.0 + 0.07 * smooth_noise(rng, shape, cells=3)) * (1.0 - 0.35 * rr ** 2)
    shade *= 1.0 - 0.25 * np.exp(-radius_map(shape, macula, 0.08 * s) ** 2)
    image = base * shade[..., None]
    glow = np.exp(-radius_map(shape, disc, 0.055 * s) ** 2 / 2)[..., None]
    image = image * (1 - glow) + np.array([250, 225, 170], np.float32) * glow

    max_width = int(np.clip(round(s / 48), 2, 4))
    tree = grow_vessel_tree(rng, shape, disc, center, fov_radius, max_width)
    mask = draw_vessels(tree, shape)
    image *= (1.0 - 0.38 * soft(mask, 0.6))[..., None]
    image = np.where(roi[..., None] > 0, image, np.float32(6.0))
    # A second observer misses some of the finest vessels.
    keep = [b for b in tree if b.width > 1 or rng.random() > 0.3]
    return Painted(to_uint8(image, rng, 2.0), mask, roi=roi, mask2=draw_vessels(keep, shape))


def grow_vessel_tree(rng: np.random.Generator, shape: tuple[int, int], disc: tuple[float, float],
                     center: tuple[float, float], fov_radius: float,
                     max_width: int) -> list[Branch]:
    """A random tree rooted in the optic disc; widths fall from ``max_width`` to 1 px.

    Growth stops at the field-of-view border, so every vessel pixel lies inside the FOV, and
    a vessel stops before it touches any vessel but its parent, so the tree has no loops:
    one 8-connected component with no enclosed background (what speck and hole checks see).
    Points are plain (x, y) floats: this loop runs thousands of tiny steps.
    """
    s = min(shape)
    step = max(2.0, s / 64)
    max_branches = int(30 + 90 * s / 256)
    # How far from its start a vessel may overlap its parent (a trunk: the other trunks).
    home = 4 * max_width + 6
    n_trunks = int(rng.integers(5, 8))
    angles = np.linspace(0, 2 * np.pi, n_trunks, endpoint=False) + rng.uniform(0, 2 * np.pi)
    trunks = set(range(1, n_trunks + 1))
    # Each pixel holds the id of the vessel drawn there (with 2 px of clearance), 0 if free.
    occupied = np.zeros(shape, np.uint16)
    # (vessel id, ids it may touch near its start, start (x, y), heading, width, length budget)
    todo = [(i, trunks, (disc[1], disc[0]), float(a), max_width, 1.6 * fov_radius)
            for i, a in zip(sorted(trunks), angles)]
    next_id = n_trunks + 1
    branches: list[Branch] = []

    def finish(vessel: int, points: list[tuple[float, float]], width: int) -> None:
        if len(points) >= 2:
            branches.append(Branch(np.array(points), width))
            footprint = np.zeros(shape, np.uint8)
            pts = np.round(np.array(points) * _ONE).astype(np.int32)
            cv2.polylines(footprint, [pts], False, 1, width + 4, cv2.LINE_8, _SHIFT)
            # Never relabel another vessel's pixels: its neighbours must still see it.
            occupied[(footprint > 0) & (occupied == 0)] = vessel

    while todo and len(branches) < max_branches:
        vessel, family, pos, heading, width, budget = todo.pop()
        birth, origin, points, travelled = pos, pos, [pos], 0.0
        while travelled < budget:
            heading += rng.normal(0.0, 0.08)
            nxt = (pos[0] + step * math.cos(heading), pos[1] + step * math.sin(heading))
            if math.hypot(nxt[1] - center[0], nxt[0] - center[1]) > fov_radius - width - 1:
                break
            allowed = family if math.dist(nxt, birth) <= home else set()
            if math.dist(nxt, origin) <= home:  # where it narrowed, it leaves itself
                allowed = allowed | {vessel}
            if _touched(occupied, pos, nxt, width) - allowed:
                break
            pos, travelled = nxt, travelled + step
            points.append(pos)
            if len(points) > 4 and rng.random() < 0.02 * step:  # ~1 branch per 50 px
                turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2)
                todo.append((next_id, {vessel}, pos, heading + turn, max(1, width - 1),
                             rng.uniform(0.4, 0.8) * fov_radius))
                next_id += 1
                if width > 1 and rng.random() < 0.5:  # the vessel narrows after a fork
                    finish(vessel, points, width)
                    origin, points, width = pos, [pos], width - 1
        finish(vessel, points, width)
    return branches


def _touched(occupied: np.ndarray, a: tuple[float, float], b: tuple[float, float],
             width: int) -> set[int]:
    """Ids of the vessels that a vessel of ``width`` drawn from a to b (x, y) would touch."""
    r = width // 2 + 1
    count = max(1, math.ceil(math.dist(a, b) / 2))  # windows >= 3 px wide, <= 2 px apart
    hits: set[int] = set()
    for k in range(1, count + 1):
        x = round(a[0] + (b[0] - a[0]) * k / count)
        y = round(a[1] + (b[1] - a[1]) * k / count)
        window = occupied[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1]
        if window.any():
            hits.update(np.unique(window[window > 0]).tolist())
    return hits


def draw_vessels(branches: list[Branch], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a vessel tree into a 0/255 mask without anti-aliasing (like the manual GIFs)."""
    mask = np.zeros(shape, np.uint8)
    for branch in branches:
        pts = np.round(branch.points * _ONE).astype(np.int32)
        cv2.polylines(mask, [pts], False, 255, branch.width, cv2.LINE_8, _SHIFT)
    # Crossing branches can enclose tiny background islands; real manual masks do not show
    # them as holes, and a clean sample must not look like a `holes` defect.
    return fill_small_holes(mask, max_area=20)


def fill_small_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill enclosed background regions (4-connected, off the frame border) up to max_area px."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((mask == 0).astype(np.uint8),
                                                                connectivity=4)
    h, w = mask.shape
    out = mask.copy()
    for label in range(1, count):
        x, y, bw, bh, area = stats[label]
        touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches_border and area <= max_area:
            out[labels == label] = 255
    return out


# ---------------------------------------------------------------------------------------
# dermoscopy (ph2)


def paint_skin(rng: np.random.Generator, shape: tuple[int, int]) -> Painted:
    """Skin with one darker, irregular brown lesion, a few hairs and dark dermoscope corners."""
    h, w = shape
    s = min(h, w)
    skin = np.array([rng.uniform(200, 235), rng.uniform(145, 180), rng.uniform(125, 160)],
                    np.float32)
    grain = 1.0 + 0.05 * smooth_noise(rng, shape, cells=3) \
        + 0.03 * smooth_noise(rng, shape, cells=max(8, s // 10), octaves=1)
    image = skin * grain[..., None]

    ry = rng.uniform(0.17, 0.26) * s
    rx = ry * rng.uniform(0.8, 1.25)
    center = (h / 2 + rng.uniform(-0.06, 0.06) * s, w / 2 + rng.uniform(-0.06, 0.06) * s)
    mask = irregular_blob(rng, shape, center, (ry, rx), roughness=0.35)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    core = np.sqrt(dist / max(float(dist.max()), 1.0))
    brown = np.array([rng.uniform(110, 155), rng.uniform(60, 95), rng.uniform(40, 75)], np.float32)
    mottle = 1.0 + 0.12 * smooth_noise(rng, shape, cells=6, octaves=2)
    lesion = brown * ((1.1 - 0.3 * core) * mottle)[..., None]
    alpha = soft(mask, max(1.0, s / 128))[..., None]
    image = image * (1 - alpha) + lesion * alpha

    image = _paint_hairs(rng, image, s)
    r = radius_map(shape, ((h - 1) / 2, (w - 1) / 2), np.hypot(h, w) / 2)
    image *= (1.0 - 0.35 * r ** 4)[..., None]
    return Painted(to_uint8(image, rng, 2.0), mask)


def _paint_hairs(rng: np.random.Generator, image: np.ndarray, s: int) -> np.ndarray:
    """Zero to three thin dark curved hairs (they cross the lesion but are not lesion)."""
    h, w = image.shape[:2]
    hairs = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        ends = rng.uniform(0, 1, (3, 2)) * [w, h]
        t = np.linspace(0, 1, 32)[:, None]
        curve = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * ends[1] + t ** 2 * ends[2]
        cv2.polylines(hairs, [np.round(curve * _ONE).astype(np.int32)], False, 255, 1,
                      cv2.LINE_AA, _SHIFT)
    alpha = 0.8 * hairs.astype(np.float32)[..., None] / 255
    return image * (1 - alpha) + np.array([55, 38, 30], np.float32) * alpha


PAINTERS = {"polyp": paint_polyp, "fundus": paint_fundus, "skin": paint_skin}
