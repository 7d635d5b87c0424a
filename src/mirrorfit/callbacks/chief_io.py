"""Chief-only file I/O for callbacks: one writer per file, on every replica count.

Every replica runs every callback and takes the same decisions, but a file must
have one writer (two processes appending to one CSV interleave their rows).
:func:`is_chief` says where a callback may write or print; :class:`ChiefTextFile`
is an append-only text file that only the chief opens and that remembers its
length after each write, so a run resumed from a backup can cut off what was
written after that backup (no duplicate rows).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from mirrorfit.callbacks.callback import TrainableModel


def is_chief(model: TrainableModel | None) -> bool:
    """True on the worker that writes files and prints (also outside any ``fit``)."""
    return model is None or model.strategy.is_chief


def chief_print(model: TrainableModel | None, text: str,
                print_fn: Callable[[str], Any] | None = None) -> None:
    """Print ``text`` (with ``print_fn`` if given, else to stdout) on the chief only."""
    if not is_chief(model):
        return
    if print_fn is not None:
        print_fn(text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


class ChiefTextFile:
    """A text file written by the chief only, one flushed chunk at a time.

    ``offset`` is the file's length after the last write (None before ``open``):
    keep it in a callback's ``state_dict`` and pass it back as ``truncate_at`` to
    drop anything written after that point.

    Args:
        path: the file; its directory is created when needed.

    Example:
        >>> import tempfile, os
        >>> f = ChiefTextFile(os.path.join(tempfile.mkdtemp(), "log.txt"))
        >>> f.open(chief=True, append=False); f.write("a\\n"); mark = f.offset
        >>> f.write("b\\n"); f.close()
        >>> f.open(chief=True, append=True, truncate_at=mark); f.close()
        >>> open(f.path).read()
        'a\\n'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offset: int | None = None
        self._file: BinaryIO | None = None

    @property
    def is_open(self) -> bool:
        return self._file is not None

    def open(self, chief: bool, append: bool, truncate_at: int | None = None) -> None:
        """Open for writing on the chief (elsewhere only mark the file open).

        Args:
            chief: whether this worker writes.
            append: keep what the file holds; otherwise start it empty.
            truncate_at: cut the file back to this length first (a resume).

        Raises:
            OSError: the file cannot be written, with its path.
        """
        if not chief:
            self._file = None
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if truncate_at is not None and self.path.is_file():
                self._file = open(self.path, "r+b")  # noqa: SIM115 (kept open across epochs)
                self._file.truncate(min(truncate_at, self.path.stat().st_size))
                self._file.seek(0, os.SEEK_END)
            else:
                self._file = open(self.path, "ab" if append else "wb")  # noqa: SIM115
        except OSError as exc:
            raise OSError(f"cannot write {str(self.path)!r}: {exc.strerror or exc}; choose a "
                          "writable path.") from exc
        self.offset = self._file.tell()

    def size(self) -> int:
        """The file's current length (0 when it does not exist)."""
        return self.path.stat().st_size if self.path.is_file() else 0

    def write(self, text: str) -> None:
        """Write and flush ``text`` (UTF-8) on the chief; a no-op elsewhere."""
        if self._file is None:
            return
        self._file.write(text.encode("utf-8"))
        self._file.flush()
        self.offset = self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
