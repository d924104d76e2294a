"""segprep: read, check, clean and augment 2D segmentation datasets into HDF5 shards.

segprep knows nothing about torch; segtrain reads what it writes through
:mod:`segprep.manifest` and :mod:`segprep.shards`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
