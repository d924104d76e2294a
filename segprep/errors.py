"""Exceptions that the command line turns into a one-line message and a non-zero exit."""


class SegprepError(Exception):
    """An expected failure caused by the user's input (a file, a manifest, an option)."""


class ManifestError(SegprepError):
    """A manifest that is missing, malformed, or points at shards that do not hold its rows."""


class ShardError(SegprepError):
    """A shard that is missing, truncated, or not a segprep shard."""


class DecodeError(SegprepError):
    """A raw image or mask file that cannot be decoded."""
