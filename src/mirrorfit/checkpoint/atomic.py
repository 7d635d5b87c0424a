"""Atomic file replacement: a reader sees the old file or the new one, never half.

The recipe (POSIX): write to a temporary name *in the same directory* (a rename
across filesystems is not atomic), flush and ``fsync`` the data, ``os.replace``
it over the target, then ``fsync`` the directory so the rename itself survives a
power cut. A crash at any point leaves the previous file intact; at worst a
stale temporary file stays behind, which :func:`remove_stale_temps` clears.

One writer per file: mirrorfit only ever calls this on the chief.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

_TMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name next to ``path`` (hidden, with pid and a random token)."""
    target = Path(path)
    return target.with_name(f".{target.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink in ``directory`` durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_parent(target: Path) -> None:
    """Create ``target``'s directory; a file in the way is named in the error.

    Raises:
        NotADirectoryError: an existing file stands where a directory is needed.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [target.parent, *target.parent.parents]
                        if p.exists() and not p.is_dir()), target.parent)
        raise NotADirectoryError(
            f"Cannot write {str(target)!r}: {str(blocker)!r} is a file, not a directory. "
            "Pass a path whose folders are directories, or move that file away.") from None


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Create or replace ``path`` atomically with what ``write(fp)`` writes.

    Args:
        path: the file to create or replace; its directory is created if needed.
        write: called with a binary file object open on the temporary file.

    Returns:
        The target path.

    Raises:
        Whatever ``write`` or the filesystem raises; the temporary file is then
        removed and the previous ``path`` (if any) is left untouched.
    """
    target = Path(path)
    make_parent(target)
    tmp = temp_path(target)
    try:
        with open(tmp, "wb") as fp:
            write(fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)
    return target


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fp: torch.save(obj, fp))


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files a killed writer of ``path`` left behind.

    Call it only where no other process writes ``path`` (the chief, before its
    first save). Returns the removed paths.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    removed = []
    for stale in target.parent.glob(f".{glob.escape(target.name)}{_TMP_MARK}*"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def remove(path: str | os.PathLike[str]) -> bool:
    """Delete ``path`` durably if it exists; returns whether it did."""
    target = Path(path)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(target.parent)
    return True
