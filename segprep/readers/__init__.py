"""Raw dataset layouts: a registry of one module per layout, and ``--layout auto`` detection.

Adding a layout means adding one module to this package (see :mod:`segprep.readers.base` for
what it defines); the registry finds it by itself.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from segprep.errors import SegprepError
from segprep.readers.base import RawPair

log = logging.getLogger(__name__)

__all__ = ["RawPair", "Source", "layouts", "get_layout", "describe_layouts", "resolve_sources"]

_NOT_LAYOUTS = {"base"}
_SEARCH_DEPTH = 2  # how far below a SRC auto-detection looks for a dataset root


def layouts() -> dict[str, ModuleType]:
    """Every layout module by name, in detection order (``PRIORITY``, then name)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_LAYOUTS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.append(module)
    found.sort(key=lambda m: (getattr(m, "PRIORITY", 50), m.NAME))
    return {module.NAME: module for module in found}


def describe_layouts() -> str:
    return "\n".join(f"  {name:13s} {module.DESCRIBE}" for name, module in layouts().items())


def get_layout(name: str) -> ModuleType:
    registry = layouts()
    if name not in registry:
        raise SegprepError(f"unknown layout {name!r}; valid layouts: auto, {', '.join(registry)} "
                           f"(what each expects on disk: README.md, docs/FORMATS.md)")
    return registry[name]


@dataclass(frozen=True)
class Source:
    """One dataset root to ingest: where it is, which layout reads it, and its source name."""

    name: str
    layout: str
    root: Path
    src: Path  # the SRC argument it was found under

    def pairs(self) -> list[RawPair]:
        return get_layout(self.layout).pairs(self.root)

    @property
    def fg_threshold(self) -> int:
        return int(getattr(get_layout(self.layout), "FG_THRESHOLD", 127))

    @property
    def near_duplicate_bits(self) -> int:
        from segprep.splits import NEAR_DUPLICATE_BITS
        return int(getattr(get_layout(self.layout), "NEAR_DUPLICATE_BITS", NEAR_DUPLICATE_BITS))


def _detect_here(path: Path, candidates: list[ModuleType]) -> ModuleType | None:
    for module in candidates:
        try:
            if module.detect(path):
                return module
        except OSError as exc:  # an unreadable sub-folder must not hide the other layouts
            log.warning("%s: cannot inspect for layout %s (%s)", path, module.NAME, exc)
    return None


def _find_roots(path: Path, candidates: list[ModuleType], depth: int) -> list[tuple[Path, ModuleType]]:
    """Dataset roots at ``path`` or below it (breadth first, stopping at the first match per branch)."""
    module = _detect_here(path, candidates)
    if module is not None:
        return [(path, module)]
    if depth == 0:
        return []
    found = []
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(_find_roots(child, candidates, depth - 1))
    return found


def _is_empty(path: Path) -> bool:
    return not any(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def _half_a_pair(path: Path, depth: int) -> str | None:
    """The likeliest reason an images/ + masks/ pair was not taken for a dataset: one side has
    no image files (an unfinished download or copy), said plainly; None when there is no such
    pair."""
    from segprep.readers.base import child_dir, image_files
    from segprep.readers.folder import IMAGE_DIRS, MASK_DIRS

    images, masks = child_dir(path, *IMAGE_DIRS), child_dir(path, *MASK_DIRS)
    if images is not None and masks is not None:
        n_images, n_masks = len(image_files(images)), len(image_files(masks))
        if n_images and not n_masks:
            return (f"{masks.name}/ holds no image files (and {images.name}/ holds {n_images}); "
                    f"put the masks there, or give the dataset's folder")
        if n_masks and not n_images:
            return (f"{images.name}/ holds no image files (and {masks.name}/ holds {n_masks} "
                    f"masks); put the images there, or give the dataset's folder")
    if depth > 0:
        for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            reason = _half_a_pair(child, depth - 1)
            if reason:
                return f"{child.name}/{reason}"
    return None


def _source_name(module: ModuleType, root: Path) -> str:
    name = module.source_name(root) if hasattr(module, "source_name") else module.NAME
    return name.replace("/", "-").strip() or module.NAME


def resolve_sources(srcs: list[Path], layout: str = "auto") -> list[Source]:
    """Find the dataset root(s) and layout of each SRC and give each a unique source name.

    A SRC may be the dataset root itself or a folder holding it (up to two levels above); a SRC
    holding several datasets yields several sources. Raises :class:`SegprepError` naming the
    SRC when nothing matches, listing every layout and what it expects.
    """
    if layout == "auto":
        candidates = list(layouts().values())
    else:
        candidates = [get_layout(layout)]
    found: list[tuple[Path, Path, ModuleType]] = []
    for src in srcs:
        src = Path(src)
        if not src.exists():
            raise SegprepError(f"{src}: no such folder")
        if not src.is_dir():
            raise SegprepError(f"{src}: not a folder (give the dataset's folder, not a file)")
        if _is_empty(src):
            raise SegprepError(f"{src}: empty folder, nothing to ingest")
        roots = _find_roots(src, candidates, _SEARCH_DEPTH)
        if not roots:
            half = _half_a_pair(src, _SEARCH_DEPTH)
            if half:
                raise SegprepError(f"{src}: {half}")
            expected = (describe_layouts() if layout == "auto"
                        else f"  {layout:13s} {candidates[0].DESCRIBE}")
            what = "no known dataset layout" if layout == "auto" else f"not a {layout} dataset"
            raise SegprepError(f"{src}: {what} found here or up to {_SEARCH_DEPTH} folders "
                               f"below; expected one of:\n{expected}")
        for root, module in roots:
            where = "" if root == src else f" (found at {root})"
            log.info("%s: layout %s%s", src, module.NAME, where)
            found.append((src, root, module))
    seen_roots: dict[Path, Path] = {}
    for src, root, _ in found:
        resolved = root.resolve()
        if resolved in seen_roots:
            raise SegprepError(f"{src}: dataset root {root} was already given as "
                               f"{seen_roots[resolved]}; give each dataset once")
        seen_roots[resolved] = src
    names = [_source_name(module, root) for _, root, module in found]
    sources = []
    for k, (src, root, module) in enumerate(found):
        name = names[k]
        if names.count(name) > 1:
            # Two copies of one dataset (or two folders with one name): the folder names tell them apart.
            name = f"{name}-{root.name}" if root.name != name else f"{root.parent.name}-{name}"
        base, n = name, 2
        while name in [s.name for s in sources]:
            name, n = f"{base}-{n}", n + 1
        sources.append(Source(name=name, layout=module.NAME, root=root, src=src))
    return sources
