"""What the trainer iterates: this replica's local batches of one epoch.

Separation of concerns:
- a *source* knows how to fetch samples by index (arrays, tensors, a torch
  Dataset, a DataLoader's dataset) — ``mirrorfit.data.sources``;
- a *batch stream* decides the global batches of an epoch (order from seed and
  epoch only) and fetches this replica's share — this module, and
  ``mirrorfit.data.Dataset`` pipelines, which implement the same protocol;
- the *trainer* owns epoch and step counters and asks for ``iter_epoch(epoch,
  start_step)``, so a checkpoint that records (epoch, step) resumes exactly,
  on any replica count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from mirrorfit.data.sharding import Replica, epoch_order, num_batches, take_share
from mirrorfit.data.sources import Source, batch_sizes, batches_per_gather, split_rows


class LocalBatch(NamedTuple):
    """One replica's share of one global batch (a named tuple: one made per step).

    Attributes:
        data: the tensors of the share, ``(x, y)`` or ``(x, y, sample_weight)`` or ``(x,)``;
            ``x`` and ``y`` may themselves be tuples/dicts of tensors.
        size: samples in this share (may be 0: then ``data`` holds one dummy
            sample that the trainer weights by zero).
        global_size: samples in the whole global batch (the divisor of the mean).
    """

    data: tuple[Any, ...]
    size: int
    global_size: int


@runtime_checkable
class BatchStream(Protocol):
    """An epoch-indexed stream of local batches; stateless between epochs.

    ``iter_epoch(epoch, start_step)`` must yield the same batches for the same
    ``(epoch, start_step)`` whatever the replica count (only the split differs).
    """

    def steps_per_epoch(self) -> int | None:
        """Global steps per epoch, or None when unknown (generators)."""

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[LocalBatch]:
        """This replica's local batches of ``epoch``, from global step ``start_step``."""

    def num_samples(self) -> int | None:
        """Samples per epoch (None when unknown)."""

    def state_dict(self) -> dict[str, Any]:
        """What besides (epoch, step) decides the order (e.g. the seed)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class IndexedBatches:
    """Global batches of an indexable source, sharded for one replica.

    Args:
        source: where samples come from.
        batch_size: the *global* batch size.
        replica: this process's place.
        shuffle: reshuffle every epoch (order from ``seed`` and the epoch only).
        seed: the order seed; every replica must pass the same.
        drop_remainder: drop a last partial global batch.
    """

    def __init__(self, source: Source, batch_size: int, replica: Replica, *,
                 shuffle: bool = False, seed: int = 0, drop_remainder: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, received {batch_size}.")
        self.source = source
        self.batch_size = batch_size
        self.replica = replica
        self.shuffle = shuffle
        self.seed = seed
        self.drop_remainder = drop_remainder

    def num_samples(self) -> int:
        return len(self.source)

    def steps_per_epoch(self) -> int:
        return num_batches(len(self.source), self.batch_size, self.drop_remainder)

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[LocalBatch]:
        order = epoch_order(len(self.source), seed=self.seed, epoch=epoch, shuffle=self.shuffle)
        end = self.steps_per_epoch()
        if self.replica.world == 1 and hasattr(self.source, "fetch_split"):
            # the generator itself, not a `yield from` around it: one frame fewer per step
            return self._whole_batches(order[start_step * self.batch_size:end * self.batch_size])
        return self._shares(order, start_step, end)

    def _shares(self, order: torch.Tensor, start_step: int, end: int) -> Iterator[LocalBatch]:
        size, total = self.batch_size, len(self.source)
        for step in range(start_step, end):
            global_idx = order[step * size:(step + 1) * size]
            yield self._share(global_idx, min(size, total - step * size))

    def _whole_batches(self, order: torch.Tensor) -> Iterator[LocalBatch]:
        """One replica over tensors: the batches of ``order`` gathered a group at a time
        (one ``index_select`` per tensor and group, each batch a view of it; a group
        holds at most ``sources.GATHER_BYTES``)."""
        size = self.batch_size
        rows = size * batches_per_gather(getattr(self.source, "row_bytes", 0), size)
        for lo in range(0, order.shape[0], rows):
            group = order[lo:lo + rows]
            batches = self.source.fetch_split(group, size)  # type: ignore[attr-defined]
            if batches is None:  # nested structures: batch by batch
                batches = map(self.source.fetch, split_rows(group, size))
            for n, data in zip(batch_sizes(group.shape[0], size), batches, strict=True):
                yield LocalBatch(data, n, n)

    def _share(self, global_idx: torch.Tensor, n: int) -> LocalBatch:
        read, size = take_share(global_idx, n, self.replica)
        return LocalBatch(self.source.fetch(read), size, n)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "shuffle": self.shuffle, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.shuffle = bool(state["shuffle"])
        if int(state["batch_size"]) != self.batch_size:
            raise ValueError(
                f"The checkpoint was taken at global batch size {state['batch_size']}, this run "
                f"uses {self.batch_size}; resume with batch_size={state['batch_size']}."
            )


class FirstSteps:
    """The first ``steps`` global batches of each epoch of ``stream`` (Keras's ``steps``
    and ``validation_steps``): the same batches on any replica count, and an end for an
    infinite stream."""

    def __init__(self, stream: BatchStream, steps: int) -> None:
        self.stream, self.steps = stream, steps
        self.batch_size = getattr(stream, "batch_size", None)

    def steps_per_epoch(self) -> int | None:
        inner = self.stream.steps_per_epoch()
        return self.steps if inner is None else min(inner, self.steps)

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[LocalBatch]:
        return itertools.islice(self.stream.iter_epoch(epoch, start_step),
                                max(0, self.steps - start_step))

    def num_samples(self) -> int | None:
        return None  # how many the first batches hold is known once they are read

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
