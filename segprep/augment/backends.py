"""Two augmentation backends behind one small interface.

``backend.augment(image, mask, roi, seed) -> Variant`` takes a sample already fitted to the
output size (:func:`fit`) with a class-index mask ({0, 1}) and returns a variant of the same size
whose mask (and ROI) are still {0, 1}, with the transforms actually applied as JSON-able dicts.
The same seed always gives the same variant, in any process.

* albumentations: an ``A.Compose`` seeded per call (one shared generator pair), masks resampled with
  nearest neighbour (``Compose(mask_interpolation=INTER_NEAREST)`` overrides every transform,
  including a user's), applied parameters from ``save_applied_params=True``.
* Augmentor: its operation classes on PIL images, driven here (not through ``Augmentor.Pipeline``,
  which wants files on disk). Augmentor resamples every image bicubically, masks included, so
  masks travel as 0/255 and a final :class:`BinarizeMasks` operation thresholds them back to {0, 1}.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

import albumentations as A
import cv2
import numpy as np

from segprep.augment import ASPECTS, BACKENDS
from segprep.augment.presets import PRESETS, Size, preset_transforms
from segprep.errors import SegprepError

log = logging.getLogger(__name__)

_SMALL_ARRAY = 16  # arrays up to this many values are written into aug_params; larger ones by shape


@dataclass
class Variant:
    image: np.ndarray            # uint8 (H, W, 3)
    mask: np.ndarray             # uint8 (H, W), {0, 1}
    roi: np.ndarray | None       # uint8 (H, W), {0, 1}, or None
    params: list[dict] = field(default_factory=list)


class Backend(Protocol):
    name: str

    def augment(self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None,
                seed: int) -> Variant: ...


@dataclass(frozen=True)
class BackendSpec:
    """Everything needed to build a backend in another process (picklable, no live objects)."""
    backend: str = "albumentations"
    size: Size = (352, 352)
    aspect: str = "resize"
    preset: str = "default"
    pipeline: dict | None = None      # albumentations.to_dict of a user pipeline, replaces preset


# ----------------------------------------------------------------------------- fitting

_fitters: dict[tuple[Size, str], A.Compose] = {}


def _fitter(size: Size, aspect: str) -> A.Compose:
    key = (tuple(size), aspect)
    if key not in _fitters:
        h, w = size
        if aspect == "resize":
            # INTER_AREA when shrinking (no aliasing), linear when growing; masks stay nearest.
            steps = [A.Resize(h, w, interpolation=cv2.INTER_LINEAR, area_for_downscale="image")]
        elif aspect == "pad":
            steps = [A.LongestMaxSize(max_size_hw=(h, w), interpolation=cv2.INTER_LINEAR,
                                      area_for_downscale="image"),
                     A.PadIfNeeded(min_height=h, min_width=w, position="center",
                                   border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0)]
        else:
            raise SegprepError(f"unknown aspect handling {aspect!r}; valid: {', '.join(ASPECTS)}")
        _fitters[key] = A.Compose(steps, mask_interpolation=cv2.INTER_NEAREST)
    return _fitters[key]


def fit(image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None, size: Size,
        aspect: str = "resize") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Bring a sample to ``size`` (H, W): ``resize`` stretches, ``pad`` keeps the aspect ratio and
    pads with black (mask 0, ROI 0: the padding is outside the field of view)."""
    if image.shape[:2] == tuple(size) and aspect == "resize":
        return image, mask, roi
    masks = [mask] if roi is None else [mask, roi]
    out = _fitter(size, aspect)(image=image, masks=masks)
    return out["image"], out["masks"][0], (out["masks"][1] if roi is not None else None)


# ----------------------------------------------------------------------------- params as JSON

def jsonable(value: Any) -> Any:
    """Applied parameters as plain JSON: small arrays as (rounded) lists, large ones (noise maps,
    dropout masks) by shape only."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items() if k not in ("shape", "bbox_matrix")}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.size <= _SMALL_ARRAY:
            return jsonable(value.tolist())
        return {"array_shape": list(value.shape)}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return repr(value)


# ----------------------------------------------------------------------------- albumentations

class AlbumentationsBackend:
    name = "albumentations"

    def __init__(self, transforms: list | A.BaseCompose | A.BasicTransform, size: Size,
                 aspect: str = "resize"):
        self.size = tuple(size)
        self.aspect = aspect
        if not isinstance(transforms, list):
            transforms = [transforms]
        self.compose = A.Compose(transforms, mask_interpolation=cv2.INTER_NEAREST,
                                 save_applied_params=True)

    def augment(self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None,
                seed: int) -> Variant:
        # One seed per call: the variant depends on (seed) alone, not on what ran before in
        # this process, so any split of the work over processes gives the same bytes.
        # Not `set_random_seed`: in albumentations 2.0.8 it gives every transform its own
        # generator seeded identically, so all transforms with the same p fire together (all
        # flips or none). One shared pair of generators draws them independently.
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        masks = [mask] if roi is None else [mask, roi]
        out = self.compose(image=image, masks=masks)
        image_out, masks_out = out["image"], out["masks"]
        if not (isinstance(image_out, np.ndarray) and image_out.dtype == np.uint8
                and image_out.ndim == 3 and image_out.shape[2] == 3):
            raise SegprepError(f"augmentation pipeline returned {type(image_out).__name__} "
                               f"{getattr(image_out, 'dtype', '')} {getattr(image_out, 'shape', '')}; "
                               f"segprep stores uint8 (H, W, 3) images: remove Normalize/ToTensorV2 "
                               f"and similar from the pipeline")
        mask_out = np.asarray(masks_out[0])
        roi_out = np.asarray(masks_out[1]) if roi is not None else None
        params = [{"name": name, "params": jsonable(p)} for name, p in out["applied_transforms"]]
        if image_out.shape[:2] != self.size:
            # A user pipeline (or a size-changing transform) may leave another size.
            image_out, mask_out, roi_out = fit(image_out, mask_out, roi_out, self.size, self.aspect)
            params.append({"name": "fit", "params": {"aspect": self.aspect, "size": list(self.size)}})
        return Variant(image_out, mask_out, roi_out, params)


# ----------------------------------------------------------------------------- Augmentor

def _augmentor_operations():
    from Augmentor import Operations  # imported lazily: only this backend needs it
    return Operations


def _binarize_masks_class():
    O = _augmentor_operations()

    class BinarizeMasks(O.Operation):
        """Threshold 0/255 masks back to class indices {0, 1} after Augmentor's bicubic
        resampling left grey edges (and overshoot) in them."""

        def __init__(self) -> None:
            super().__init__(probability=1.0)

        def perform_operation(self, images):
            from PIL import Image
            return [Image.fromarray((np.asarray(image) >= 128).astype(np.uint8)) for image in images]

    return BinarizeMasks


def augmentor_operations(name: str, size: Size) -> list[tuple[Any, bool]]:
    """The Augmentor counterpart of each preset: ``(operation, image_only)`` pairs. Colour
    operations and random erasing touch the image only (Augmentor would apply them to masks)."""
    O = _augmentor_operations()
    square = size[0] == size[1]
    flips = [(O.Flip(probability=0.5, top_bottom_left_right="LEFT_RIGHT"), False),
             (O.Flip(probability=0.5, top_bottom_left_right="TOP_BOTTOM"), False)]
    rotate90 = [(O.Rotate(probability=0.5, rotation=-1), False)] if square else []
    crop = [(O.ZoomRandom(probability=0.5, percentage_area=0.8, randomise=False), False)]
    colour = [(O.RandomBrightness(probability=0.5, min_factor=0.8, max_factor=1.2), True),
              (O.RandomContrast(probability=0.5, min_factor=0.8, max_factor=1.2), True),
              (O.RandomColor(probability=0.3, min_factor=0.8, max_factor=1.2), True),
              (O.HistogramEqualisation(probability=0.1), True)]
    if name == "default":
        return [*crop, *flips, *rotate90, (O.RotateRange(0.5, 30, 30), False), *colour,
                (O.RandomErasing(probability=0.3, rectangle_area=0.15), True)]
    if name == "light":
        return [*flips, (O.RotateRange(0.5, 15, 15), False)]
    if name == "geometric":
        return [*crop, *flips, *rotate90, (O.RotateRange(0.5, 30, 30), False),
                (O.Shear(probability=0.2, max_shear_left=8, max_shear_right=8), False),
                (O.Distort(probability=0.2, grid_width=4, grid_height=4, magnitude=4), False)]
    if name == "photometric":
        return colour
    raise SegprepError(f"unknown augmentation preset {name!r}; valid: {', '.join(PRESETS)}")


class AugmentorBackend:
    name = "augmentor"

    def __init__(self, preset: str, size: Size, aspect: str = "resize"):
        self.size = tuple(size)
        self.aspect = aspect
        self.operations = augmentor_operations(preset, self.size)
        self.binarize = _binarize_masks_class()()

    def augment(self, image: np.ndarray, mask: np.ndarray, roi: np.ndarray | None,
                seed: int) -> Variant:
        from PIL import Image
        # Augmentor draws from the global `random` and `numpy.random` generators: seed both per
        # variant, and restore them afterwards so the caller's streams are left alone.
        saved = random.getstate(), np.random.get_state()
        try:
            random.seed(seed)
            np.random.seed(seed % 2**32)
            picture = Image.fromarray(image)
            labels = [Image.fromarray(mask * np.uint8(255))]
            if roi is not None:
                labels.append(Image.fromarray((roi > 0).astype(np.uint8) * np.uint8(255)))
            params = []
            for operation, image_only in self.operations:
                # An exact Bernoulli(p) draw (Augmentor's Pipeline rounds its draw to 0.1).
                if random.random() >= operation.probability:
                    continue
                if image_only:
                    picture = operation.perform_operation([picture])[0]
                else:
                    picture, *labels = operation.perform_operation([picture, *labels])
                # Augmentor does not report the values it drew; the seed reproduces them.
                params.append({"name": type(operation).__name__,
                               "params": jsonable({k: v for k, v in vars(operation).items()})})
            labels = self.binarize.perform_operation(labels)
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
        image_out = np.asarray(picture.convert("RGB"), dtype=np.uint8)
        mask_out = np.asarray(labels[0], dtype=np.uint8)
        roi_out = np.asarray(labels[1], dtype=np.uint8) if roi is not None else None
        if image_out.shape[:2] != self.size:
            image_out, mask_out, roi_out = fit(image_out, mask_out, roi_out, self.size, self.aspect)
            params.append({"name": "fit", "params": {"aspect": self.aspect, "size": list(self.size)}})
        return Variant(np.ascontiguousarray(image_out), np.ascontiguousarray(mask_out),
                       None if roi_out is None else np.ascontiguousarray(roi_out), params)


# ----------------------------------------------------------------------------- factory

def make_backend(spec: BackendSpec) -> Backend:
    size = tuple(spec.size)
    if spec.aspect not in ASPECTS:
        raise SegprepError(f"unknown aspect handling {spec.aspect!r}; valid: {', '.join(ASPECTS)}")
    if spec.backend == "albumentations":
        if spec.pipeline is not None:
            return AlbumentationsBackend(A.from_dict(spec.pipeline), size, spec.aspect)
        return AlbumentationsBackend(preset_transforms(spec.preset, size), size, spec.aspect)
    if spec.backend == "augmentor":
        if spec.pipeline is not None:
            raise SegprepError("--pipeline files are albumentations pipelines; they cannot run on "
                               "the augmentor backend (use --backend albumentations, or a --preset)")
        return AugmentorBackend(spec.preset, size, spec.aspect)
    raise SegprepError(f"unknown augmentation backend {spec.backend!r}; valid: {', '.join(BACKENDS)}")
