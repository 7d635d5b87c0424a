"""The errors a checkpoint can raise, one class per thing that can be wrong.

Every one is a ``CheckpointError`` (a ``ValueError``), so ``except CheckpointError``
catches them all; loading never modifies or deletes the file that failed.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint could not be used; the message names the file and the fix."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, garbled or not a torch file at all."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects that ``torch.load(weights_only=True)`` refuses."""


class IncompatibleCheckpointError(CheckpointError):
    """The file is not a mirrorfit checkpoint of the expected kind and format version."""


class MismatchedCheckpointError(CheckpointError):
    """The file was written for another model (different keys, shapes or optimizer groups)."""
