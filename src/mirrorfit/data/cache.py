"""cache(): elements kept in memory, and optionally in a file that a later run reuses.

A cache file records a *fingerprint* of everything upstream of it:
- the source: every byte of sliced arrays; for a torch Dataset its type, length
  and 8 evenly spaced samples; for a generator the function (see below);
- each stage before ``cache()``: its arguments, and map functions by their
  bytecode, constants, defaults and closure values.

A run whose fingerprint differs from the file's raises ``CacheMismatchError``
naming both pipelines (or, with ``on_mismatch="rebuild"``, rewrites the file).
A file that is not a mirrorfit cache always raises: it is never overwritten.
Not detected: module globals a function reads, and files a generator or a
torch Dataset reads beyond the sampled items; delete the file after such changes.

Files are written to a temporary name and renamed into place, so a crash never
leaves half a cache, and replicas writing the same file do not corrupt it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
import types
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirrorfit.checkpoint.atomic import atomic_save

__all__ = ["CacheMismatchError", "CacheStore", "fingerprint"]

_FORMAT = "mirrorfit.data.cache/1"
_MAX_DEPTH = 12
_SAMPLED_ITEMS = 8
_CONTENT_NEUTRAL = ("Prefetch", "Cache")  # stages that never change what elements hold


class CacheMismatchError(ValueError):
    """A cache file that another pipeline wrote, or that is not a mirrorfit cache."""


class CacheStore:
    """Where one ``cache()`` stage keeps its elements once built (shared by derived datasets)."""

    def __init__(self) -> None:
        self._data: Any = None
        self._key: Hashable = None
        self._lock = threading.Lock()

    def get(self, build: Callable[[], Any], *, path: Path | None,
            fingerprint: Callable[[], str], pipeline: str, on_mismatch: str,
            key: Hashable = None) -> Any:
        """The cached structure: from memory, else from ``path``, else ``build()`` (and saved).

        A different ``key`` (a cache of batches: the seed and the replica whose shares
        it keeps) replaces what memory holds; only the latest content is kept.
        """
        with self._lock:
            if self._data is None or key != self._key:
                self._data = None  # free the old content before building the new one
                if path is None:
                    self._data = build()
                else:
                    self._data = _through_file(path, build, fingerprint(), pipeline, on_mismatch)
                self._key = key
            return self._data


def _through_file(path: Path, build: Callable[[], Any], fp: str, pipeline: str,
                  on_mismatch: str) -> Any:
    if path.exists():
        saved = _read(path)
        if saved["fingerprint"] == fp:
            return saved["data"]
        if on_mismatch == "error":
            raise CacheMismatchError(
                f"The cache file {path} was written for a different pipeline: it holds "
                f"{saved.get('pipeline')!r} (fingerprint {saved['fingerprint'][:12]}), this "
                f"dataset is {pipeline!r} (fingerprint {fp[:12]}): the source or a stage before "
                "cache() changed. Delete the file to rebuild it, pass another path, or use "
                "cache(path, on_mismatch='rebuild')."
            )
    data = build()
    _write(path, {"format": _FORMAT, "fingerprint": fp, "pipeline": pipeline, "data": data})
    return data


def _read(path: Path) -> dict[str, Any]:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CacheMismatchError(
            f"{path} is not a readable mirrorfit cache file ({type(err).__name__}: {err}). "
            "Delete it, or pass cache() a path of its own."
        ) from err
    if not isinstance(saved, dict) or saved.get("format") != _FORMAT:
        got = saved.get("format") if isinstance(saved, dict) else type(saved).__name__
        raise CacheMismatchError(
            f"{path} is not a mirrorfit cache file (format {got!r}, expected {_FORMAT!r}). "
            "Delete it, or pass cache() a path of its own; mirrorfit never overwrites it."
        )
    return saved


def _write(path: Path, payload: dict[str, Any]) -> None:
    atomic_save(payload, path)  # temp file, fsync, rename: readers never see half a file


def fingerprint(elements: Any, stages: Sequence[Any]) -> str:
    """A hex digest of a root and the stages applied to it (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, _FORMAT)
    _feed(h, type(elements).__name__)
    if hasattr(elements, "structure"):
        _feed(h, elements.structure)
    elif hasattr(elements, "dataset"):
        _feed_dataset(h, elements.dataset)
    else:
        _feed(h, getattr(elements, "fn", None))
    for stage in stages:
        if type(stage).__name__ in _CONTENT_NEUTRAL:
            continue
        _feed(h, type(stage).__name__)
        for f in dataclasses.fields(stage):
            _feed(h, getattr(stage, f.name))
    return h.hexdigest()


def _feed(h: Any, value: Any, depth: int = 0) -> None:
    """Stable across runs: never hashes ``repr`` of arbitrary objects (it holds addresses)."""
    if depth > _MAX_DEPTH:
        h.update(b"<deep>")
        return
    h.update(type(value).__name__.encode() + b":")
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        h.update(repr(value).encode())
    elif isinstance(value, torch.Tensor):
        _feed_tensor(h, value)
    elif isinstance(value, np.ndarray):
        if value.dtype == object:
            _feed(h, value.tolist(), depth + 1)
        else:
            _feed_tensor(h, torch.from_numpy(np.ascontiguousarray(value)))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _feed(h, k, depth + 1)
            _feed(h, v, depth + 1)
    elif isinstance(value, (tuple, list)):
        h.update(str(len(value)).encode())
        for v in value:
            _feed(h, v, depth + 1)
    elif isinstance(value, types.CodeType):
        _feed_code(h, value, depth)
    elif callable(value):
        _feed_callable(h, value, depth)
    else:
        h.update(f"{type(value).__module__}.{type(value).__qualname__}".encode())


def _feed_tensor(h: Any, t: torch.Tensor) -> None:
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def _feed_code(h: Any, code: types.CodeType, depth: int) -> None:
    h.update(code.co_code)
    _feed(h, code.co_names, depth + 1)
    for const in code.co_consts:
        _feed(h, const, depth + 1)


def _feed_callable(h: Any, fn: Any, depth: int) -> None:
    if isinstance(fn, functools.partial):
        for part in (fn.func, fn.args, fn.keywords):
            _feed(h, part, depth + 1)
        return
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    code = getattr(fn, "__code__", None)
    if code is None:  # a builtin, a class, or an object with __call__
        if not isinstance(fn, type) and hasattr(fn, "__dict__"):
            _feed(h, type(fn).__qualname__, depth + 1)
            _feed(h, vars(fn), depth + 1)
        return
    _feed_code(h, code, depth)
    _feed(h, getattr(fn, "__defaults__", None), depth + 1)
    _feed(h, getattr(fn, "__kwdefaults__", None), depth + 1)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            _feed(h, cell.cell_contents, depth + 1)
        except ValueError:  # an empty cell
            h.update(b"<empty>")


def _feed_dataset(h: Any, dataset: Any) -> None:
    h.update(f"{type(dataset).__module__}.{type(dataset).__qualname__}".encode())
    n = len(dataset)
    _feed(h, n)
    picks = sorted({round(k * (n - 1) / (_SAMPLED_ITEMS - 1)) for k in range(_SAMPLED_ITEMS)})
    for i in picks if n else []:
        _feed(h, dataset[i])
