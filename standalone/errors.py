"""The error a checkpoint directory or file that cannot be used raises (its own module so that the
checkpoint reader and the manifest checks can both raise it without importing each other)."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be used; the message names what is wrong."""
