"""``python -m segtrain ...`` (used by ``torchrun -m segtrain run ...``)."""

from segtrain.cli import main

main()
