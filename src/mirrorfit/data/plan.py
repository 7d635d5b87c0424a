"""Compile a Dataset's stages into a plan: a handle sequence plus fetch-time work.

Selection stages (shuffle, take, skip, repeat, batch) become handle sequences.
Maps are element-wise, so they commute with selection: they move to fetch time
and run only on the handles actually read (after sharding, only this replica's
share). ``cache`` cuts the pipeline: everything before it is materialised once
into tensors, which then act as a new sliced source; after ``batch()`` it keeps
this replica's shares of the global batches (``mirrorfit.data.batch_cache``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from mirrorfit.data.batch_cache import BatchCache, replica_path
from mirrorfit.data.batches import LocalBatch
from mirrorfit.data.cache import fingerprint
from mirrorfit.data.elements import Elements, SliceElements, collate_named, describe_handles
from mirrorfit.data.prefetch import ordered_map
from mirrorfit.data.sequences import (
    BatchSeq,
    Chunk,
    EpochKey,
    RepeatSeq,
    Seq,
    ShuffleSeq,
    SkipSeq,
    TakeSeq,
    blocks,
    items,
)
from mirrorfit.data.sharding import Replica, take_share
from mirrorfit.data.stages import (
    Batch,
    Cache,
    Map,
    Prefetch,
    Repeat,
    Shuffle,
    Skip,
    Stage,
    Take,
)
from mirrorfit.data.trees import as_tuple, concat

__all__ = ["MapFunctionError", "Plan", "batch_fetcher", "compile_plan", "describe", "fetch_batch",
           "fetch_samples", "local_batch", "share_reader"]

_CACHE_BLOCK = 1024  # elements materialised per fetch while building a cache


class MapFunctionError(RuntimeError):
    """A function given to ``Dataset.map`` raised; the message names the element(s)."""


@dataclass(frozen=True)
class Plan:
    """What one epoch runs: ``seq`` picks handles, ``elements`` + maps turn them into data."""

    elements: Elements
    seq: Seq
    sample_maps: tuple[Map, ...] = ()
    batch_maps: tuple[Map, ...] = ()
    batched: bool = False
    prefetch: Prefetch | None = None
    workers: int = 1
    shuffles: int = 0

    @property
    def indexable(self) -> bool:
        return self.elements.indexable


def describe(elements: Elements, stages: Sequence[Stage]) -> str:
    """``'slices(100) -> shuffle(None) -> batch(32)'``: the pipeline in one line."""
    parts = [elements.describe()]
    for stage in stages:
        if isinstance(stage, Map):
            args = getattr(stage.fn, "__qualname__", type(stage.fn).__name__)
        else:
            args = ", ".join(repr(getattr(stage, f)) for f in _SHOWN_FIELDS[type(stage)])
        parts.append(f"{type(stage).__name__.lower()}({args})")
    return " -> ".join(parts)


_SHOWN_FIELDS: dict[type, tuple[str, ...]] = {
    Shuffle: ("buffer_size",), Batch: ("size",), Cache: ("path",), Prefetch: ("buffer_size",),
    Take: ("count",), Skip: ("count",), Repeat: ("count",),
}


def compile_plan(elements: Elements, stages: Sequence[Stage], seed: int,
                 replica: Replica | None = None) -> Plan:
    """The plan for ``stages`` over ``elements``; builds (or loads) caches on the way.

    Args:
        seed: the seed of shuffles given ``seed=None``; also freezes the order of any
            shuffle before a ``cache()`` (the first pass is what gets cached).
        replica: whose shares a ``cache()`` after ``batch()`` keeps (default: one replica).
    """
    replica = replica or Replica()
    plan = Plan(elements, elements.seq())
    for i, stage in enumerate(stages):
        if isinstance(stage, Shuffle):
            plan = replace(plan, seq=ShuffleSeq(plan.seq, stage, plan.shuffles),
                           shuffles=plan.shuffles + 1)
        elif isinstance(stage, (Take, Skip, Repeat)):
            plan = replace(plan, seq=_SELECT[type(stage)](plan.seq, stage))
        elif isinstance(stage, Batch):
            plan = replace(plan, seq=BatchSeq(plan.seq, stage), batched=True)
        elif isinstance(stage, Map):
            plan = _add_map(plan, stage)
        elif isinstance(stage, Prefetch):
            plan = replace(plan, prefetch=stage)
        else:
            plan = _cached(plan, stage, elements, stages[:i], seed, replica)
    return plan


_SELECT: dict[type, Callable[[Seq, Any], Seq]] = {Take: TakeSeq, Skip: SkipSeq, Repeat: RepeatSeq}


def _add_map(plan: Plan, stage: Map) -> Plan:
    workers = max(plan.workers, stage.workers)
    if plan.batched:
        return replace(plan, batch_maps=(*plan.batch_maps, stage), workers=workers)
    return replace(plan, sample_maps=(*plan.sample_maps, stage), workers=workers)


def _cached(plan: Plan, stage: Cache, root: Elements, upstream: Sequence[Stage],
            seed: int, replica: Replica) -> Plan:
    if plan.batched:
        return _cached_batches(plan, stage, root, upstream, seed, replica)
    data = stage.store.get(
        lambda: _materialise(plan, EpochKey(seed, 0)),
        path=stage.path,
        fingerprint=lambda: fingerprint(root, upstream),
        pipeline=describe(root, upstream),
        on_mismatch=stage.on_mismatch,
    )
    cached = SliceElements(data, label="cached element")
    return Plan(cached, cached.seq(), prefetch=plan.prefetch, shuffles=plan.shuffles)


def _cached_batches(plan: Plan, stage: Cache, root: Elements, upstream: Sequence[Stage],
                    seed: int, replica: Replica) -> Plan:
    """``batch(n).cache()``: this replica's shares of the first pass, per replica and seed."""
    building = replace(plan, prefetch=None)
    payload = stage.store.get(
        lambda: BatchCache.build(
            local_batch(building, h, replica) for h in items(plan.seq.chunks(EpochKey(seed, 0)))),
        path=None if stage.path is None else replica_path(stage.path, replica),
        fingerprint=lambda: fingerprint(root, upstream),
        pipeline=describe(root, upstream),
        on_mismatch=stage.on_mismatch,
        key=(seed, replica.rank, replica.world),
    )
    cached = BatchCache(payload)
    return Plan(cached, cached.seq(), batched=True, prefetch=plan.prefetch,
                shuffles=plan.shuffles)


def local_batch(plan: Plan, handles: Chunk, replica: Replica) -> LocalBatch:
    """``replica``'s share of the global batch ``handles``, fetched and mapped."""
    return share_reader(plan, replica)(handles)


def share_reader(plan: Plan, replica: Replica) -> Callable[[Chunk], LocalBatch]:
    """From a global batch's handles to ``replica``'s share, fetched and mapped; bound
    once per epoch.

    The handles are cut *before* anything is read, so a replica reads only its own
    samples; an empty share reads one dummy sample and reports ``size=0``. After
    ``batch().cache()`` the cache already holds only this replica's shares.
    """
    fetch = batch_fetcher(plan)
    if isinstance(plan.elements, BatchCache):
        return partial(_cached_share, plan.elements, fetch)
    if replica.world == 1:
        return partial(_whole_batch, fetch)
    return partial(_replica_share, fetch, replica)


def _cached_share(cache: BatchCache, fetch: Callable[[Chunk], Any], handles: Chunk) -> LocalBatch:
    return LocalBatch(as_tuple(fetch(handles)), cache.size(handles), cache.global_size(handles))


def _whole_batch(fetch: Callable[[Chunk], Any], handles: Chunk) -> LocalBatch:
    # one replica: the share is the global batch (the hot path of a 1-process fit)
    n = handles.shape[0] if isinstance(handles, torch.Tensor) else len(handles)
    return LocalBatch(as_tuple(fetch(handles)), n, n)


def _replica_share(fetch: Callable[[Chunk], Any], replica: Replica,
                   handles: Chunk) -> LocalBatch:
    n = handles.shape[0] if isinstance(handles, torch.Tensor) else len(handles)
    read, size = take_share(handles, n, replica)
    return LocalBatch(as_tuple(fetch(read)), size, n)


def _materialise(plan: Plan, key: EpochKey) -> Any:
    pieces = (piece for chunk in plan.seq.chunks(key) for piece in blocks(chunk, _CACHE_BLOCK))
    parts = list(ordered_map(lambda h: fetch_batch(plan, h), pieces, plan.workers))
    if not parts:
        raise ValueError("cache() received an empty dataset (0 elements); check the source "
                         "and any take()/skip() before cache().")
    return concat(parts)


def batch_fetcher(plan: Plan) -> Callable[[Chunk], Any]:
    """``fetch_batch`` for ``plan``, bound once per epoch: without maps, the gather itself."""
    if not plan.sample_maps and not plan.batch_maps:
        return plan.elements.batch
    return partial(fetch_batch, plan)


def fetch_batch(plan: Plan, handles: Chunk) -> Any:
    """The batched element for ``handles``: a gather, then sample maps, then batch maps."""
    elements = plan.elements
    if plan.sample_maps:
        batch = collate_named(fetch_samples(plan, handles), elements, handles)
    else:
        batch = elements.batch(handles)
    for stage in plan.batch_maps:
        batch = _call(stage, batch, lambda: describe_handles(elements, handles))
    return batch


def fetch_samples(plan: Plan, handles: Chunk) -> list[Any]:
    """The samples for ``handles``, each passed through the maps before ``batch``."""
    elements = plan.elements
    samples = elements.samples(handles)
    if not plan.sample_maps:
        return samples
    out = []
    for sample, pos in zip(samples, elements.positions(handles), strict=True):
        for stage in plan.sample_maps:
            sample = _call(stage, sample, partial(_one, elements, pos))
        out.append(sample)
    return out


def _one(elements: Elements, pos: int) -> str:
    return f"the {getattr(elements, 'label', 'sample')} at index {pos}"


def _call(stage: Map, element: Any, where: Callable[[], str]) -> Any:
    """``fn(*element)`` for tuples (tf.data's habit), ``fn(element)`` otherwise."""
    try:
        return stage.fn(*element) if isinstance(element, tuple) else stage.fn(element)
    except Exception as err:
        name = getattr(stage.fn, "__qualname__", type(stage.fn).__name__)
        raise MapFunctionError(
            f"The map function {name} raised {type(err).__name__}: {err} — on {where()}. "
            "Fix the function or that input (the original traceback is above)."
        ) from err
