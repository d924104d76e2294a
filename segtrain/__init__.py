"""segtrain: train, evaluate and benchmark the U-Net family from segprep shards."""

import os

from segprep import __version__

# torch's CPU kernels run on OpenMP threads that, by default, spin while they wait for work.
# When other processes share the cores (a shared workstation, a cluster node's CPU quota, our
# own DataLoader workers) the spinning threads take turns with the working ones: a 2-epoch CPU
# training took 82 s against 34 s alone on 2 cores. Passive waiting keeps the alone time (34 s)
# and brings the shared one to 57 s, as fast as one thread (benchmarks/README.md, "Threads").
# It must be set before torch loads its OpenMP runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["__version__"]
