"""Stage specifications: what each ``Dataset`` method records, validated on the spot.

A stage is a frozen value: ``Dataset`` appends one per method call and never
runs anything. ``mirrorfit.data.plan`` later compiles the stages into handle
sequences (which elements, in what order) and fetch-time work (maps).

Lengths ("cardinalities") follow tf.data: a count of elements, or ``INFINITE``
(-1) or ``UNKNOWN`` (-2).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mirrorfit.data.cache import CacheStore
from mirrorfit.data.sharding import num_batches

__all__ = [
    "AUTOTUNE", "INFINITE", "UNKNOWN", "Batch", "Cache", "Map", "Prefetch", "Repeat", "Shuffle",
    "Skip", "Stage", "Take",
]

AUTOTUNE = -1
"""Let mirrorfit pick: ``num_parallel_calls`` = CPU count, ``prefetch`` = 2 batches."""
INFINITE = -1
UNKNOWN = -2
_AUTO_PREFETCH = 2


def _check_count(value: Any, what: str, fix: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} needs an integer >= {minimum}; received {value!r}. {fix}")
    return value


@dataclass(frozen=True)
class Shuffle:
    """Reorder elements: a full permutation (``buffer_size=None``) or a tf-style buffer."""

    buffer_size: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.buffer_size is not None:
            _check_count(self.buffer_size, "shuffle(buffer_size=...)",
                         "Pass buffer_size=None for a full shuffle, or a positive buffer size "
                         "(a buffer of 0 would hold nothing to shuffle).", minimum=1)
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"shuffle(seed=...) needs an int or None; received {self.seed!r}.")

    def out_length(self, n: int) -> int:
        if self.buffer_size is None and n == INFINITE:
            raise ValueError(
                "shuffle(buffer_size=None) shuffles a whole epoch, but this dataset is "
                "infinite (repeat() before shuffle()). Shuffle before repeat(), or pass a "
                "buffer_size, e.g. shuffle(buffer_size=10_000)."
            )
        return n


@dataclass(frozen=True)
class Map:
    """Apply ``fn`` to every element flowing at this point (a sample, or after batch a batch)."""

    fn: Callable[..., Any]
    num_parallel_calls: int | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"map(fn) needs a callable; received {type(self.fn).__name__}.")
        n = self.num_parallel_calls
        if n is not None and n != AUTOTUNE:
            _check_count(n, "map(num_parallel_calls=...)",
                         "Pass None (run in the pipeline's thread), a positive number of "
                         "threads, or mirrorfit.data.AUTOTUNE.", minimum=1)

    @property
    def workers(self) -> int:
        if self.num_parallel_calls == AUTOTUNE:
            return max(1, torch.get_num_threads(), _cpu_count())
        return self.num_parallel_calls or 1

    def out_length(self, n: int) -> int:
        return n


@dataclass(frozen=True)
class Batch:
    """Group consecutive elements into global batches of ``size`` samples."""

    size: int
    drop_remainder: bool = False

    def __post_init__(self) -> None:
        _check_count(self.size, "batch(global_batch)",
                     "Pass the number of samples per step across all replicas, e.g. batch(32).",
                     minimum=1)

    def out_length(self, n: int) -> int:
        return n if n < 0 else num_batches(n, self.size, self.drop_remainder)


@dataclass(frozen=True)
class Cache:
    """Keep the elements seen so far: in memory, and in ``path`` when given."""

    path: Path | None = None
    on_mismatch: str = "error"
    store: CacheStore = field(default_factory=CacheStore, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.on_mismatch not in ("error", "rebuild"):
            raise ValueError(f"cache(on_mismatch=...) must be 'error' or 'rebuild'; received "
                             f"{self.on_mismatch!r}.")

    def out_length(self, n: int) -> int:
        if n == INFINITE:
            raise ValueError("cache() needs a finite dataset; received an infinite one "
                             "(repeat() before cache()). Move repeat() after cache().")
        return n


@dataclass(frozen=True)
class Prefetch:
    """Produce up to ``buffer_size`` batches ahead in a background thread."""

    buffer_size: int = AUTOTUNE
    device: torch.device | None = None

    def __post_init__(self) -> None:
        if self.buffer_size != AUTOTUNE:
            _check_count(self.buffer_size, "prefetch(buffer_size)",
                         "Pass a number of batches to produce ahead (0 disables the background "
                         "thread), or mirrorfit.data.AUTOTUNE.")

    @property
    def size(self) -> int:
        return _AUTO_PREFETCH if self.buffer_size == AUTOTUNE else self.buffer_size

    def out_length(self, n: int) -> int:
        return n


@dataclass(frozen=True)
class Take:
    count: int

    def __post_init__(self) -> None:
        _check_count(self.count, "take(count)", "Pass how many elements to keep, e.g. take(100).")

    def out_length(self, n: int) -> int:
        if n == INFINITE:
            return self.count
        return n if n == UNKNOWN else min(n, self.count)


@dataclass(frozen=True)
class Skip:
    count: int

    def __post_init__(self) -> None:
        _check_count(self.count, "skip(count)", "Pass how many elements to drop, e.g. skip(100).")

    def out_length(self, n: int) -> int:
        return n if n < 0 else max(n - self.count, 0)


@dataclass(frozen=True)
class Repeat:
    count: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None:
            _check_count(self.count, "repeat(count)",
                         "Pass None to repeat forever, or how many passes to make.")

    def out_length(self, n: int) -> int:
        if self.count == 0 or n == 0:
            return 0
        if self.count is None:
            return INFINITE
        return n if n < 0 else n * self.count


Stage = Shuffle | Map | Batch | Cache | Prefetch | Take | Skip | Repeat


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
