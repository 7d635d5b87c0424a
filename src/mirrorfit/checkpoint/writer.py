"""Saving without stalling training: snapshot to host memory, write in a thread.

A synchronous save blocks the training loop for serialization, the write and
the ``fsync``. An asynchronous one blocks only for the snapshot (a copy of every
tensor into host memory, so training may go on changing the live tensors);
a background thread then writes the snapshot through the same atomic rename.
At most one write is in flight: the next save (or :meth:`CheckpointWriter.wait`)
waits for it and re-raises its error, so a failed write is never silent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from mirrorfit.checkpoint.errors import CheckpointDiskFullError
from mirrorfit.checkpoint.io import save_checkpoint


def to_host(obj: Any, memo: dict[int, torch.Tensor] | None = None) -> Any:
    """A copy of ``obj`` whose tensors are fresh CPU copies (shared tensors stay shared).

    CUDA tensors go through pinned memory with one synchronization at the end.
    """
    memo = {} if memo is None else memo
    out = _copy(obj, memo)
    if torch.cuda.is_available() and any(t.is_pinned() for t in memo.values()):
        torch.cuda.synchronize()  # the non_blocking copies must land before anyone reads them
    return out


def _copy(obj: Any, memo: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in memo:
            t = obj.detach()
            if t.device.type == "cpu":
                memo[key] = t.clone()
            else:
                host = torch.empty(t.shape, dtype=t.dtype, pin_memory=t.device.type == "cuda")
                memo[key] = host.copy_(t, non_blocking=True)
        return memo[key]
    if isinstance(obj, dict):
        return type(obj)((k, _copy(v, memo)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy(v, memo) for v in obj)
    return obj


class CheckpointWriter:
    """Writes checkpoints synchronously, or asynchronously after a host snapshot.

    Args:
        async_save: write in a background thread; ``save`` returns after the snapshot.
    """

    def __init__(self, async_save: bool = False) -> None:
        self.async_save = async_save
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, content: dict[str, Any], path: str | os.PathLike[str], kind: str,
             then: Callable[[], None] | None = None) -> None:
        """Write ``content`` as a checkpoint of ``kind``; call ``then()`` once it is on disk.

        Raises:
            Whatever the previous asynchronous write raised, or this synchronous one.
        """
        self.wait()
        if not self.async_save:
            save_checkpoint(content, path, kind)
            if then is not None:
                then()
            return
        snapshot = to_host(content)
        self._thread = threading.Thread(target=self._run, args=(snapshot, path, kind, then),
                                        name="mirrorfit-checkpoint-writer")
        self._thread.start()

    def _run(self, snapshot: dict[str, Any], path: str | os.PathLike[str], kind: str,
             then: Callable[[], None] | None) -> None:
        try:
            save_checkpoint(snapshot, path, kind)
            if then is not None:
                then()
        except BaseException as exc:  # re-raised in the training thread by wait()
            self._error = exc

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error.

        Raises:
            CheckpointDiskFullError: the background write ran out of space (as is, so
                ``except OSError`` sees it whether the write was asynchronous or not).
            RuntimeError: the background write failed otherwise (the cause is chained).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, CheckpointDiskFullError):
                raise error
            raise RuntimeError(f"A background checkpoint write failed: {error}") from error

    @property
    def busy(self) -> bool:
        """True while a background write is in flight."""
        return self._thread is not None and self._thread.is_alive()
