"""segprep: read, check, clean and augment 2D segmentation datasets into HDF5 shards.

segprep knows nothing about torch. It owns the on-disk contract (manifest columns, shard
layout, the raw-file decoder) that segtrain and every later consumer read through:
:mod:`segprep.manifest`, :mod:`segprep.shards` (:class:`~segprep.shards.ShardReader`) and
:mod:`segprep.imageio`; and the machinery both packages share: :mod:`segprep.work` (locks,
atomic files), :mod:`segprep.executor` (worker processes, CPU count), :mod:`segprep.progress`
and :mod:`segprep.lazycli`. docs/DEVELOPING.md draws the whole picture.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("segkit")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
