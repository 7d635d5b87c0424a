"""Checkpoint mechanics, one concern per module:

- ``atomic``: write-then-rename with fsync; stale temporary files;
- ``io``: torch files with a versioned header, ``weights_only`` loads, clear errors;
- ``rng``: global RNG states as tensors;
- ``state``: a Model's full training state, gathered and restored;
- ``writer``: synchronous or asynchronous (snapshot + thread) writes.

The user-facing pieces are :func:`mirrorfit.load_model`, :meth:`mirrorfit.Model.save`,
:func:`mirrorfit.restore_or_create` and the ``ModelCheckpoint`` and
``BackupAndRestore`` callbacks.
"""

from __future__ import annotations

from mirrorfit.checkpoint.atomic import atomic_save, atomic_write
from mirrorfit.checkpoint.errors import (
    CheckpointDiskFullError,
    CheckpointError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    MismatchedCheckpointError,
    UnsafeCheckpointError,
)
from mirrorfit.checkpoint.io import FORMAT_VERSION, load_checkpoint, save_checkpoint
from mirrorfit.checkpoint.writer import CheckpointWriter

__all__ = [
    "FORMAT_VERSION",
    "CheckpointDiskFullError",
    "CheckpointError",
    "CheckpointWriter",
    "CorruptCheckpointError",
    "IncompatibleCheckpointError",
    "MismatchedCheckpointError",
    "UnsafeCheckpointError",
    "atomic_save",
    "atomic_write",
    "load_checkpoint",
    "save_checkpoint",
]
