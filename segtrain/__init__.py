"""segtrain: train, evaluate and benchmark the U-Net family from segprep shards."""

from segprep import __version__

__all__ = ["__version__"]
