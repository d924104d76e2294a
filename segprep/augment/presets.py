"""Augmentation presets and user pipelines.

A preset is a list of albumentations (2.0) transforms that runs on a sample already resized to
the output size (see :func:`segprep.augment.backends.fit`). Running after the resize keeps every
transform's cost independent of the native image size; a crop is then upsampled from the
resized image, which at the scales used here (>= 60% of the area) costs little detail.

Augmentor presets with the same names live in :mod:`segprep.augment.backends`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import albumentations as A
import cv2

from segprep.augment import PRESET_NAMES
from segprep.errors import SegprepError

log = logging.getLogger(__name__)

Size = tuple[int, int]


def _square_only(size: Size, transforms: list[A.BasicTransform]) -> list[A.BasicTransform]:
    """Rotate90 and transpose swap height and width: only shape-preserving on square outputs."""
    return transforms if size[0] == size[1] else []


def _crop(size: Size, p: float) -> A.BasicTransform:
    # "Keeps most of the image": at least 60% of the area, mild aspect change, so a polyp near
    # the border survives most crops (a crop that loses all foreground is redrawn anyway).
    return A.RandomResizedCrop(size=size, scale=(0.6, 1.0), ratio=(0.8, 1.25), p=p)


def _rotate(limit: float, p: float) -> A.BasicTransform:
    # Constant black border, mask and ROI filled with 0: the rotated-in corners are background
    # and, where a ROI travels, outside the field of view.
    return A.Rotate(limit=limit, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=p)


def _photometric(scale: float = 1.0) -> list[A.BasicTransform]:
    """Colour/texture transforms; ``scale`` raises the probabilities for the photometric preset."""
    return [
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=min(1.0, 0.5 * scale)),
        A.RandomGamma(gamma_limit=(80, 120), p=min(1.0, 0.3 * scale)),
        A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10,
                             p=min(1.0, 0.3 * scale)),
        A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=min(1.0, 0.2 * scale)),
        A.OneOf([A.MotionBlur(blur_limit=(3, 7)),
                 A.MedianBlur(blur_limit=(3, 5)),
                 A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.3, 1.5))], p=min(1.0, 0.3 * scale)),
        # std_range is a fraction of 255: 5 to 20 grey levels of noise.
        A.GaussNoise(std_range=(0.02, 0.08), p=min(1.0, 0.2 * scale)),
        A.RGBShift(r_shift_limit=15, g_shift_limit=15, b_shift_limit=15, p=min(1.0, 0.3 * scale)),
        # Swapping channels changes what tissue looks like: rare.
        A.ChannelShuffle(p=min(1.0, 0.05 * scale)),
    ]


def _flips() -> list[A.BasicTransform]:
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def default_preset(size: Size) -> list[A.BasicTransform]:
    """The seed experiments' list: crop, flips, rotate90/transpose, rotate, colour, blur, noise,
    RGB shift, channel shuffle, coarse dropout."""
    return [
        _crop(size, p=0.5),
        *_flips(),
        *_square_only(size, [A.RandomRotate90(p=0.5), A.Transpose(p=0.3)]),
        _rotate(30, p=0.5),
        *_photometric(),
        # Holes in the image only (fill_mask=None): the mask keeps the object under the hole, as
        # in cutout; the model must infer it from context.
        A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                        hole_width_range=(0.05, 0.15), fill=0, fill_mask=None, p=0.3),
    ]


def light_preset(size: Size) -> list[A.BasicTransform]:
    """Flips and small rotations."""
    return [*_flips(), _rotate(15, p=0.5)]


def geometric_preset(size: Size) -> list[A.BasicTransform]:
    """Shape only: crop, flips, rotate90/transpose, rotate, affine, grid distortion."""
    return [
        _crop(size, p=0.5),
        *_flips(),
        *_square_only(size, [A.RandomRotate90(p=0.5), A.Transpose(p=0.3)]),
        _rotate(30, p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), shear=(-8, 8),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.3),
        A.GridDistortion(num_steps=5, distort_limit=(-0.2, 0.2), border_mode=cv2.BORDER_CONSTANT,
                         fill=0, fill_mask=0, p=0.2),
    ]


def photometric_preset(size: Size) -> list[A.BasicTransform]:
    """Colour and texture only (the mask is never touched)."""
    return _photometric(scale=1.6)


PRESETS: dict[str, Callable[[Size], list[A.BasicTransform]]] = {
    "default": default_preset,
    "light": light_preset,
    "geometric": geometric_preset,
    "photometric": photometric_preset,
}
assert tuple(PRESETS) == PRESET_NAMES, "keep segprep.augment.PRESET_NAMES in step with PRESETS"


def preset_transforms(name: str, size: Size) -> list[A.BasicTransform]:
    """The named preset's transforms for output ``size`` (H, W)."""
    if name not in PRESETS:
        raise SegprepError(f"unknown augmentation preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name](size)


def _pipeline_format(path: Path) -> str:
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"


def load_pipeline(path: Path) -> A.BaseCompose:
    """Load a pipeline saved with ``albumentations.save`` (JSON, or YAML for .yaml/.yml files)."""
    path = Path(path)
    if not path.is_file():
        raise SegprepError(f"{path}: pipeline file not found")
    data_format = _pipeline_format(path)
    try:
        transform = A.load(str(path), data_format=data_format)
    except Exception as exc:  # albumentations raises anything from KeyError to yaml errors
        raise SegprepError(f"{path}: not an albumentations pipeline saved with albumentations.save "
                           f"({data_format}): {type(exc).__name__}: {exc}") from None
    if not isinstance(transform, (A.BaseCompose, A.BasicTransform)):
        raise SegprepError(f"{path}: holds a {type(transform).__name__}, not an albumentations "
                           f"transform or Compose")
    return transform


def pipeline_dict(path: Path) -> dict[str, Any]:
    """The pipeline file's content as albumentations' own dict (for the run's options record and
    to rebuild it in worker processes with ``A.from_dict``), in JSON's types: ``to_dict`` gives
    tuples where the record read back from JSON has lists, and the two must compare equal."""
    return json.loads(json.dumps(A.to_dict(load_pipeline(path))))
