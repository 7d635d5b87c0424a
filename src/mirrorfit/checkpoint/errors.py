"""The errors a checkpoint can raise, one class per thing that can be wrong.

Every error about a file's content is a ``CheckpointError`` (a ``ValueError``), so
``except CheckpointError`` catches them all; loading never modifies or deletes the
file that failed. A full disk while writing is not about the content:
:class:`CheckpointDiskFullError` is an ``OSError`` with ``errno.ENOSPC`` (or
``EDQUOT``), so ``except OSError`` and errno checks see it as usual.
"""

from __future__ import annotations

import errno as errno_codes
import os


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


class CheckpointDiskFullError(OSError):
    """The device (or the user's quota) ran out of space while a checkpoint was written.

    Raised by every checkpoint write (``Model.save``, ``save_weights``,
    ``ModelCheckpoint``, ``BackupAndRestore``) in place of torch's
    ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos ...``.
    The write went to a temporary file, which is removed, so the file at ``filename``
    is the previous checkpoint, untouched (or still absent).

    Attributes:
        errno: ``errno.ENOSPC`` (no space left) or ``errno.EDQUOT`` (quota exceeded).
        filename: the checkpoint that could not be written.
        needed: the size of the checkpoint in bytes (None if it could not be measured).
        free: the bytes free on that filesystem after the temporary file was removed.
    """

    def __init__(self, path: str | os.PathLike[str], needed: int | None, free: int | None,
                 previous: bool, code: int = errno_codes.ENOSPC) -> None:
        super().__init__(code, os.strerror(code), str(path))
        self.needed = needed
        self.free = free
        size = "size unknown" if needed is None else f"{needed} bytes needed"
        if free is not None:
            size += f", {free} free"
        what = ("no space left on device" if code == errno_codes.ENOSPC
                else "disk quota exceeded")
        kept = ("the previous checkpoint is intact" if previous
                else "no file was written")
        self.message = (f"{what} while writing {str(path)!r} ({size}); {kept}. Free some space "
                        "there, or write the checkpoint to another directory.")

    def __str__(self) -> str:
        return self.message
