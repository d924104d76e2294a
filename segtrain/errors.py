"""Exceptions that the ``segtrain`` command line turns into a one-line message."""

from segprep.errors import SegprepError


class SegtrainError(SegprepError):
    """An expected failure caused by the user's input (an option, a checkpoint, a model name)."""
