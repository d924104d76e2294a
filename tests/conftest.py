"""Shared pytest fixtures. Tests use synthetic data only (never ../shared)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Caches (the model table of `segtrain models`) go to a temporary folder, not ~/.cache."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """Factory for synthetic raw datasets, made once per argument tuple per session.

    ``root = synth("kvasir-seg", n=12, noise=0.0, seed=0, size=(64, 64)).root``
    returns a :class:`segprep.synth.SynthResult`. The files are shared between tests:
    treat them as read-only (copy the folder to change it).
    """
    made = {}

    def make(layout: str = "kvasir-seg", n: int = 12, noise: float = 0.0, seed: int = 0,
             size: tuple[int, int] = (64, 64)):
        from segprep.synth import make_dataset  # imported here: not every test needs cv2

        key = (layout, n, float(noise), seed, tuple(size))
        if key not in made:
            out = tmp_path_factory.mktemp(f"synth-{layout}")
            made[key] = make_dataset(out, layout, n=n, size=tuple(size), noise=noise, seed=seed)
        return made[key]

    return make


@pytest.fixture(scope="session")
def cleaned(synth):
    """Factory for a WORK folder made by `segprep ingest` then `clean` (one worker) from a
    synthetic dataset: ``work = cleaned(folder, n=24, noise=0.5, seed=31)`` returns
    ``folder/work``. Not shared: each call makes its own, which the test may change."""

    def make(folder, layout: str = "kvasir-seg", n: int = 12, noise: float = 0.0, seed: int = 0,
             size: tuple[int, int] = (64, 64)):
        from segprep.clean import clean
        from segprep.ingest import ingest
        from segprep.shards import close_shards

        work = folder / "work"
        ingest([synth(layout, n=n, noise=noise, seed=seed, size=size).root], work, workers=1)
        clean(work / "manifests" / "ingest.csv", workers=1, progress=False)
        close_shards()
        return work

    return make

