"""Which elements an epoch visits, in what order: lazy sequences of *handles*.

Shuffle, take, skip, repeat and batch never touch data. They rearrange
handles: int64 indices for indexable sources (so whole chunks move as one
tensor operation), ``(position, sample)`` pairs for generators. A sequence is
produced in *chunks* (a tensor of indices, or a list of handles; after
``batch`` a list of per-batch handle chunks) from any ``start`` position, so a
resumed epoch jumps to its first step without reading what it skips, wherever
lengths are known.

The order is a pure function of an ``EpochKey`` (seed, epoch, repetition path),
never of the replica count.
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np
import torch

from mirrorfit.data.sharding import epoch_order
from mirrorfit.data.sources import split_rows
from mirrorfit.data.stages import UNKNOWN, Batch, Repeat, Shuffle, Skip, Take

__all__ = [
    "BatchSeq", "Blocks", "Chunk", "EpochKey", "RangeSeq", "RepeatSeq", "Seq", "ShuffleSeq",
    "SkipSeq", "StreamSeq", "TakeSeq", "blocks", "items",
]

Chunk = torch.Tensor | Sequence[Any]
_RANGE_BLOCK = 1 << 20
_STREAM_BLOCK = 256
_CUT_AHEAD = 64  # batch views cut at a time while iterating Blocks
_MASK63 = (1 << 63) - 1


@dataclass(frozen=True)
class EpochKey:
    """What decides an order: the seed, the epoch, and which repetition (for nested repeats)."""

    seed: int
    epoch: int
    reps: tuple[int, ...] = ()

    def child(self, rep: int) -> EpochKey:
        return replace(self, reps=(*self.reps, rep))


class Seq(ABC):
    """A lazy sequence of handles; ``length`` is a count, ``INFINITE`` or ``UNKNOWN``."""

    length: int

    @abstractmethod
    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        """The handles from position ``start`` on, in chunks."""


class RangeSeq(Seq):
    """``0 .. n-1``: the handles of an indexable source."""

    def __init__(self, n: int) -> None:
        self.length = n

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        for lo in range(start, self.length, _RANGE_BLOCK):
            yield torch.arange(lo, min(lo + _RANGE_BLOCK, self.length), dtype=torch.int64)


class StreamSeq(Seq):
    """``(position, sample)`` pairs from a fresh ``fn()`` iterator per pass."""

    length = UNKNOWN

    def __init__(self, fn: Callable[[], Iterable[Any]]) -> None:
        self.fn = fn

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        source = self.fn()
        if not isinstance(source, Iterable):
            raise TypeError(f"from_generator(fn): fn() must return an iterable; it returned "
                            f"{type(source).__name__}.")
        # skipped samples are read (a generator cannot jump) but never mapped or batched
        pairs = itertools.islice(enumerate(source), start, None)
        while block := list(itertools.islice(pairs, _STREAM_BLOCK)):
            yield block


class ShuffleSeq(Seq):
    """A full permutation per (seed, epoch), or a tf-style shuffle buffer."""

    def __init__(self, up: Seq, stage: Shuffle, ordinal: int) -> None:
        self.up, self.stage, self.ordinal = up, stage, ordinal
        self.length = stage.out_length(up.length)

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        seed = _derive_seed(key.seed if self.stage.seed is None else self.stage.seed,
                            self.ordinal, key.reps)
        if self.stage.buffer_size is None:
            parts = list(self.up.chunks(key))
            if not parts:
                return
            everything = _concat(parts)
            # the same permutation as IndexedBatches for the first shuffle of an epoch
            perm = epoch_order(len(everything), seed=seed, epoch=key.epoch, shuffle=True)
            yield _permute(everything, perm)[start:]
            return
        rng = np.random.default_rng([seed & _MASK63, key.epoch & _MASK63])
        shuffled = _buffer_shuffle(self.up.chunks(key), self.stage.buffer_size, rng)
        yield from _skip_items(shuffled, start)


class TakeSeq(Seq):
    def __init__(self, up: Seq, stage: Take) -> None:
        self.up, self.count = up, stage.count
        self.length = stage.out_length(up.length)

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        remaining = self.count - start
        if remaining <= 0:
            return
        for chunk in self.up.chunks(key, start):
            if len(chunk) >= remaining:
                yield chunk[:remaining]
                return
            remaining -= len(chunk)
            yield chunk


class SkipSeq(Seq):
    def __init__(self, up: Seq, stage: Skip) -> None:
        self.up, self.count = up, stage.count
        self.length = stage.out_length(up.length)

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        yield from self.up.chunks(key, start + self.count)


class RepeatSeq(Seq):
    """Passes over ``up``, each under its own key (so upstream shuffles reshuffle)."""

    def __init__(self, up: Seq, stage: Repeat) -> None:
        self.up, self.count = up, stage.count
        self.length = stage.out_length(up.length)

    def _reps(self, first: int) -> Iterator[int]:
        return itertools.count(first) if self.count is None else iter(range(first, self.count))

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        n = self.up.length
        if n == 0:
            return
        if n > 0:  # known length: jump straight to the pass and offset of `start`
            first, offset = divmod(start, n)
            for rep in self._reps(first):
                yield from self.up.chunks(key.child(rep), offset)
                offset = 0
            return
        yield from _skip_items(self._passes(key), start)

    def _passes(self, key: EpochKey) -> Iterator[Chunk]:
        for rep in self._reps(0):
            produced = False
            for chunk in self.up.chunks(key.child(rep)):
                produced = produced or len(chunk) > 0
                yield chunk
            if not produced:  # an empty pass would otherwise repeat forever
                return


class BatchSeq(Seq):
    """Consecutive handles grouped per global batch; chunks are lists of per-batch handles."""

    def __init__(self, up: Seq, stage: Batch) -> None:
        self.up, self.size, self.drop = up, stage.size, stage.drop_remainder
        self.length = stage.out_length(up.length)

    def chunks(self, key: EpochKey, start: int = 0) -> Iterator[Chunk]:
        carry: Chunk | None = None
        for chunk in self.up.chunks(key, start * self.size):
            if carry is not None and len(carry):
                chunk = _concat([carry, chunk])
            full = len(chunk) // self.size * self.size
            if full:
                yield blocks(chunk[:full], self.size)
            carry = chunk[full:]
        if carry is not None and len(carry) and not self.drop:
            yield [carry]


def items(chunks: Iterable[Chunk]) -> Iterator[Any]:
    """The handles of a chunked sequence one by one (for batch sequences: one per batch)."""
    return itertools.chain.from_iterable(chunks)


def blocks(chunk: Chunk, size: int) -> Sequence[Chunk]:
    """``chunk`` cut into pieces of ``size`` handles (tensor pieces are views, cut as read)."""
    if isinstance(chunk, torch.Tensor):
        return Blocks(chunk, size)
    return [chunk[i:i + size] for i in range(0, len(chunk), size)]


class Blocks(Sequence[torch.Tensor]):
    """A tensor of handles seen as consecutive pieces of ``size``, cut only when read.

    Cutting an epoch of 60,000 indices into 1,875 views up front took milliseconds before
    the first batch; iteration here cuts ``_CUT_AHEAD`` pieces at a time instead.
    """

    def __init__(self, handles: torch.Tensor, size: int) -> None:
        self.handles, self.size = handles, size
        self._len = -(-handles.shape[0] // size)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[torch.Tensor]:
        for group in self.groups():
            yield from split_rows(group, self.size)

    def groups(self, pieces: int = _CUT_AHEAD) -> Iterator[torch.Tensor]:
        """The handles ``pieces`` pieces at a time (a reader may gather a group at once
        and cut the result, one gather per group instead of one per piece)."""
        step = self.size * pieces
        for lo in range(0, self.handles.shape[0], step):
            yield self.handles[lo:lo + step]

    @overload
    def __getitem__(self, i: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[torch.Tensor]: ...

    def __getitem__(self, i: int | slice) -> torch.Tensor | Sequence[torch.Tensor]:
        if isinstance(i, slice):
            lo, hi, stride = i.indices(self._len)
            if stride != 1:
                return [self[j] for j in range(lo, hi, stride)]
            return Blocks(self.handles[lo * self.size:max(lo, hi) * self.size], self.size)
        if not -self._len <= i < self._len:
            raise IndexError(f"block {i} of {self._len}")
        lo = (i % self._len) * self.size
        return self.handles[lo:lo + self.size]


def _concat(chunks: list[Chunk]) -> Chunk:
    if isinstance(chunks[0], torch.Tensor):
        return torch.cat(chunks)  # type: ignore[arg-type]
    return [h for c in chunks for h in c]


def _permute(chunk: Chunk, perm: torch.Tensor) -> Chunk:
    if isinstance(chunk, torch.Tensor):
        return chunk.index_select(0, perm)  # plain indexing takes the slower general path
    return [chunk[i] for i in perm.tolist()]


def _skip_items(chunks: Iterator[Chunk], n: int) -> Iterator[Chunk]:
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:] if n else chunk
        n = 0


def _buffer_shuffle(chunks: Iterator[Chunk], size: int, rng: np.random.Generator
                    ) -> Iterator[Chunk]:
    """tf.data's shuffle buffer: fill ``size`` handles, then emit a random one per arrival.

    Every arrival draws its pick, as the element-wise definition does, so the order for a
    seed never depends on how the work is done; but the filling takes whole chunks at
    once, and a buffer that never fills (``buffer_size >= length``, the usual
    ``shuffle(len(x))``) ends as one vectorised permutation, with no Python per element.
    """
    filling: list[Chunk] = []  # the buffer while it fills, as the chunks came
    filled = 0
    buffer: list[Any] | None = None  # the buffer once full: swapped one handle at a time
    as_tensor = False
    for chunk in chunks:
        as_tensor = isinstance(chunk, torch.Tensor)
        picks = rng.integers(0, size, len(chunk))
        k = 0 if buffer is not None else min(size - filled, len(chunk))
        if k:
            filling.append(chunk[:k])
            filled += k
        if k == len(chunk):
            continue
        if buffer is None:
            buffer, filling = _as_list(_concat(filling)) if filling else [], []
        out = []
        for handle, j in zip(_as_list(chunk[k:]), picks[k:].tolist(), strict=True):
            out.append(buffer[j])
            buffer[j] = handle
        yield torch.tensor(out, dtype=torch.int64) if as_tensor else out
    if buffer is None and not filling:
        return
    rest: Chunk = _concat(filling) if buffer is None else buffer
    if as_tensor and not isinstance(rest, torch.Tensor):
        rest = torch.tensor(rest, dtype=torch.int64)
    yield _permute(rest, torch.from_numpy(rng.permutation(len(rest))))


def _as_list(chunk: Chunk) -> list[Any]:
    return chunk.tolist() if isinstance(chunk, torch.Tensor) else list(chunk)


def _derive_seed(seed: int, ordinal: int, reps: tuple[int, ...]) -> int:
    """The first shuffle of a plain epoch uses ``seed`` as is (the order IndexedBatches uses);
    later shuffles and repetitions mix in where they are, so none repeats another's order."""
    if ordinal == 0 and not reps:
        return seed
    raw = ",".join(str(v) for v in (seed, ordinal, *reps)).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") & _MASK63

