"""PH2 (Mendonca et al., EMBC 2013): 200 dermoscopic images in nested per-case BMP folders.

``<case>/<case>_Dermoscopic_Image/<case>.bmp`` and ``<case>/<case>_lesion/<case>_lesion.bmp``
(``<case>_roi/`` colour regions are not the lesion mask and are ignored). The download wraps
the cases in ``PH2Dataset/PH2 Dataset images/``; pointing at either folder works. The case is
the sample's group.
"""

from __future__ import annotations

from pathlib import Path

from segprep.readers.base import RawPair, child_dir, image_files

NAME = "ph2"
DESCRIBE = "<case>/<case>_Dermoscopic_Image/<case>.bmp + <case>/<case>_lesion/<case>_lesion.bmp"
PRIORITY = 20


def _cases(path: Path) -> list[Path]:
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir()
                  if p.is_dir() and child_dir(p, f"{p.name}_Dermoscopic_Image") is not None)


def detect(path: Path) -> bool:
    return bool(_cases(path))


def _first_image(folder: Path | None, case: str) -> Path | None:
    files = image_files(folder) if folder is not None else []
    exact = [p for p in files if p.stem.lower() in (case.lower(), f"{case}_lesion".lower())]
    return (exact or files or [None])[0]


def pairs(path: Path) -> list[RawPair]:
    out = []
    for case_dir in _cases(path):
        case = case_dir.name
        image = _first_image(child_dir(case_dir, f"{case}_Dermoscopic_Image"), case)
        mask = _first_image(child_dir(case_dir, f"{case}_lesion"), case)
        if image is None and mask is None:
            continue
        out.append(RawPair(case, image, mask, group=case))
    return out
