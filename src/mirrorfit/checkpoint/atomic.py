"""Atomic file replacement: a reader sees the old file or the new one, never half.

The recipe (POSIX): write to a temporary name *in the same directory* (a rename
across filesystems is not atomic), flush and ``fsync`` the data, ``os.replace``
it over the target, then ``fsync`` the directory so the rename itself survives a
power cut. A crash at any point leaves the previous file intact; at worst a
stale temporary file stays behind, which :func:`remove_stale_temps` clears.

One writer per file: mirrorfit only ever calls this on the chief. A sharded
checkpoint (``checkpoint.sharded``) is a folder behind a link that is replaced the
same way; :func:`remove` and :func:`remove_stale_temps` handle those too.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from mirrorfit.checkpoint.errors import CheckpointDiskFullError

_TMP_MARK = ".tmp-"
#: the data folders of sharded checkpoints, next to the link that names the live one
DATA_MARK = ".data-"


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
        CheckpointDiskFullError: the device or quota ran out of space (an ``OSError``
            with ``errno.ENOSPC`` or ``EDQUOT``, however ``write`` reported it).
        Whatever else ``write`` or the filesystem raises. Either way the temporary
        file is removed and the previous ``path`` (if any) is left untouched.
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
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        full = _disk_full_error(exc, target, write)
        if full is not None:
            raise full from _root_os_error(exc)
        raise
    fsync_dir(target.parent)
    return target


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _disk_full_error(exc: BaseException, target: Path,
                    write: Callable[[IO[bytes]], Any]) -> CheckpointDiskFullError | None:
    """The clear error for a write to ``target`` that failed for lack of space, else None.

    torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc:...]
    . unexpected pos A vs B``, with the ``OSError(ENOSPC)`` of our file object as its
    context; a bare "unexpected pos" with less space free than the file needs counts
    too. Runs only after a failure: it measures the file by writing it again into a
    byte counter (the cost of one more serialization, nothing on disk).
    """
    root = _root_os_error(exc)
    if root is None and "unexpected pos" not in str(exc):
        return None
    needed, free = _measure(write), _free_bytes(target.parent)
    if root is None and (free is None or needed is None or needed <= free):
        return None  # torch's message, but not for lack of space
    code = root.errno if root is not None and root.errno else errno.ENOSPC
    return CheckpointDiskFullError(target, needed, free, target.exists(), code)


def _root_os_error(exc: BaseException) -> OSError | None:
    """The first OSError reporting a lack of space in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _ByteCounter:
    """A write-only file object that keeps only the number of bytes written."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _measure(write: Callable[[IO[bytes]], Any]) -> int | None:
    counter = _ByteCounter()
    try:
        write(counter)  # type: ignore[arg-type]  # torch.save needs only write()
    except Exception:  # a writer that needs seek() or tell(): size unknown
        return None
    return counter.written


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fp: torch.save(obj, fp))


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files and folders a killed writer of ``path`` left behind, and
    data folders of a sharded checkpoint that ``path`` no longer links to.

    Call it only where no other process writes ``path`` (the chief, before its
    first save). Returns the removed paths.
    """
    target = Path(path)
    if not target.parent.is_dir():
        return []
    live = linked_folder(target)
    name = glob.escape(target.name)
    removed = []
    for stale in [*target.parent.glob(f".{name}{_TMP_MARK}*"),
                  *target.parent.glob(f".{name}{DATA_MARK}*")]:
        if live is not None and stale.name == live.name:
            continue
        with contextlib.suppress(OSError):
            _delete(stale)
            removed.append(stale)
    return removed


def linked_folder(target: Path) -> Path | None:
    """The folder a sharded checkpoint's link ``target`` points to (None: not a link)."""
    if not target.is_symlink():
        return None
    return target.parent / os.readlink(target)


def remove(path: str | os.PathLike[str]) -> bool:
    """Delete ``path`` durably if it exists (a file, or a sharded checkpoint's link and
    folder); returns whether it did."""
    target = Path(path)
    data = linked_folder(target)
    try:
        _delete(target)
    except FileNotFoundError:
        return False
    fsync_dir(target.parent)
    if data is not None and data.parent == target.parent:
        shutil.rmtree(data, ignore_errors=True)
    return True


def _delete(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()
