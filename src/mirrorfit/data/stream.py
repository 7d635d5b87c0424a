"""A batched Dataset as the trainer's ``BatchStream``: each replica reads only its share.

The global batches of an epoch come from the plan's handle sequence, keyed by
(seed, epoch) only. Each global batch's handles are cut with ``take_share``
*before* anything is read, so a replica gathers and maps only its own samples;
an empty share reads one dummy sample and reports ``size=0``. After
``batch().cache()`` the shares come from this replica's cache of batches
(``mirrorfit.data.batch_cache``), built the same way on the first pass.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from mirrorfit.data.batch_cache import BatchCache
from mirrorfit.data.batches import LocalBatch
from mirrorfit.data.elements import Elements, SliceElements
from mirrorfit.data.plan import (
    Plan,
    batch_fetcher,
    compile_plan,
    describe,
    fetch_samples,
    share_reader,
)
from mirrorfit.data.prefetch import ordered_map, prefetch
from mirrorfit.data.sequences import Blocks, Chunk, EpochKey, blocks, items
from mirrorfit.data.sharding import Replica
from mirrorfit.data.sources import batch_sizes, batches_per_gather
from mirrorfit.data.stages import INFINITE, Batch, Stage
from mirrorfit.data.trees import as_tuple

__all__ = ["DatasetBatches", "iter_batches", "iter_samples", "local_batches"]

_SAMPLE_BLOCK = 256  # samples fetched at once when iterating an unbatched dataset


class DatasetBatches:
    """This replica's local batches of a batched ``Dataset`` (implements ``BatchStream``).

    Args:
        elements: the dataset's root.
        stages: its stages; one must be ``batch``.
        replica: this process's place.
        seed: the seed of shuffles created with ``seed=None``; every replica must pass the same.

    Raises:
        ValueError: the dataset is not batched.
    """

    def __init__(self, elements: Elements, stages: Sequence[Stage], replica: Replica,
                 seed: int) -> None:
        batches = [s for s in stages if isinstance(s, Batch)]
        if not batches:
            raise ValueError(
                f"A Dataset given to fit/evaluate/predict must be batched; received "
                f"{describe(elements, stages)}. Add .batch(global_batch) (the samples per step "
                "across all replicas), e.g. ds.batch(64)."
            )
        self.elements, self.stages, self.replica, self.seed = elements, tuple(stages), replica, seed
        self.batch_size = batches[0].size
        self._plan: Plan | None = None
        self._plan_seed: int | None = None
        self._lock = threading.Lock()

    def plan(self) -> Plan:
        with self._lock:
            if self._plan is None or self._plan_seed != self.seed:
                self._plan = compile_plan(self.elements, self.stages, self.seed, self.replica)
                self._plan_seed = self.seed
            return self._plan

    def steps_per_epoch(self) -> int | None:
        n = self.plan().seq.length
        return n if n >= 0 else None

    @property
    def infinite(self) -> bool:
        """A ``repeat()`` without a count: an epoch never ends by itself."""
        return self.plan().seq.length == INFINITE

    def num_samples(self) -> int | None:
        plan = self.plan()
        if plan.seq.length < 0 or not plan.indexable:
            return None  # counting would run the generator
        handles = items(plan.seq.chunks(EpochKey(self.seed, 0)))
        if isinstance(plan.elements, BatchCache):
            return sum(plan.elements.global_size(h) for h in handles)
        return sum(len(h) for h in handles)

    def iter_epoch(self, epoch: int, start_step: int = 0) -> Iterator[LocalBatch]:
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0; received {start_step}.")
        return local_batches(self.plan(), EpochKey(self.seed, epoch), start_step, self.replica)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["batch_size"]) != self.batch_size:
            raise ValueError(
                f"The checkpoint was taken at global batch size {state['batch_size']}, this "
                f"Dataset uses batch({self.batch_size}); resume with "
                f".batch({state['batch_size']})."
            )
        self.seed = int(state["seed"])


def local_batches(plan: Plan, key: EpochKey, start_step: int,
                  replica: Replica) -> Iterator[LocalBatch]:
    """Global batches from ``start_step``, cut to ``replica``'s share, fetched and mapped."""
    chunks = plan.seq.chunks(key, start_step)
    out: Iterator[LocalBatch]
    if replica.world == 1 and _gathers_groups(plan):
        out = (LocalBatch(as_tuple(data), n, n) for n, data in _grouped(plan, chunks, sizes=True))
    else:
        out = ordered_map(share_reader(plan, replica), items(chunks), plan.workers)
    if plan.prefetch is not None and plan.prefetch.size > 0:
        return prefetch(out, plan.prefetch.size, plan.prefetch.device)
    return out


def iter_batches(plan: Plan, key: EpochKey) -> Iterator[tuple[Any, ...]]:
    """A batched pipeline's batches (plain iteration: one replica), each as a tuple."""
    out: Iterator[tuple[Any, ...]]
    if _gathers_groups(plan):
        out = _grouped(plan, plan.seq.chunks(key), sizes=False)
        if not plan.elements.yields_tuples:  # type: ignore[attr-defined]
            out = map(as_tuple, out)
    else:
        fetch = batch_fetcher(plan)
        out = ordered_map(lambda h: as_tuple(fetch(h)), items(plan.seq.chunks(key)),
                          plan.workers)
    if plan.prefetch is not None and plan.prefetch.size > 0:
        return prefetch(out, plan.prefetch.size, plan.prefetch.device)
    return out


def _gathers_groups(plan: Plan) -> bool:
    """Whether batches may be gathered many at a time: slices of tensors and no maps (a
    map runs per batch, and a pool of map threads takes the batches one by one)."""
    return (plan.batched and isinstance(plan.elements, SliceElements) and not plan.sample_maps
            and not plan.batch_maps)


def _grouped(plan: Plan, chunks: Iterator[Chunk], sizes: bool) -> Iterator[Any]:
    """Each global batch (as ``(its size, batch)`` with ``sizes``), gathering a group of
    batches at once where the handles come as :class:`Blocks` (one gather instead of
    dozens; the handles are never cut per batch). ``chain`` takes each batch from its
    group in C: this generator runs once per group, not once per batch."""
    return itertools.chain.from_iterable(_groups(plan, chunks, sizes))


def _groups(plan: Plan, chunks: Iterator[Chunk], sizes: bool) -> Iterator[Iterator[Any]]:
    elements = plan.elements
    assert isinstance(elements, SliceElements)
    for chunk in chunks:
        if isinstance(chunk, Blocks):
            per = batches_per_gather(elements.row_bytes, chunk.size)
            for group in chunk.groups(per):
                batches = elements.batches(group, chunk.size)
                yield (zip(batch_sizes(group.shape[0], chunk.size), batches, strict=True)
                       if sizes else batches)
                del batches  # this frame holds no group while the next one is gathered
        else:  # a last partial batch, or handles cut otherwise
            yield (((len(piece), elements.batch(piece)) for piece in chunk) if sizes
                   else map(elements.batch, chunk))


def iter_samples(plan: Plan, key: EpochKey) -> Iterator[tuple[Any, ...]]:
    """An unbatched pipeline's elements one by one (plain iteration), each as a tuple."""
    pieces = (p for chunk in plan.seq.chunks(key) for p in blocks(chunk, _SAMPLE_BLOCK))
    out: Iterator[list[Any]] = ordered_map(lambda h: fetch_samples(plan, h), pieces, plan.workers)
    if plan.prefetch is not None and plan.prefetch.size > 0:
        out = prefetch(out, plan.prefetch.size, plan.prefetch.device)
    for block in out:
        yield from (as_tuple(s) for s in block)
