"""Batches of tensor slices gathered a group at a time are the batch-by-batch gathers."""

from __future__ import annotations

from typing import Any

import torch

from mirrorfit.data import Dataset
from mirrorfit.data.sequences import _CUT_AHEAD
from mirrorfit.data.sharding import Replica

N = 32 * _CUT_AHEAD * 2 + 5  # two whole groups, a partial group, a partial last batch


def _data() -> tuple[dict[str, Any], torch.Tensor]:
    x = torch.randn(N, 3, 2)
    return {"x": x, "pair": (x.sum((1, 2)), torch.arange(N))}, torch.arange(N) % 7


def _flat(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    values = batch.values() if isinstance(batch, dict) else batch
    return [leaf for v in values for leaf in _flat(v)]


def _same(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b) == -(-N // 32)
    for one, two in zip(a, b, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(_flat(one), _flat(two), strict=True))


def test_plain_iteration_gathers_per_group_with_the_same_batches() -> None:
    ds = Dataset.from_tensor_slices(_data()).shuffle(N, seed=3).batch(32)
    grouped = list(ds)
    per_batch = list(ds.map(lambda x, y: (x, y)))  # a map takes the batch-by-batch path
    _same(grouped, per_batch)
    # the point of it: one gather per group, each batch a view of it
    storages = {b[1].untyped_storage().data_ptr() for b in grouped}
    assert len(storages) <= -(-len(grouped) // _CUT_AHEAD) + 1 < len(grouped)


def test_one_replica_fit_stream_resumes_mid_group_with_the_same_batches() -> None:
    ds = Dataset.from_tensor_slices(_data()).shuffle(N, seed=3).batch(32)
    mapped = ds.map(lambda x, y: (x, y))

    def stream(d: Dataset, start: int) -> list[Any]:
        batches = d._as_batch_stream(replica=Replica(), shuffle=True, seed=0).iter_epoch(1, start)
        out = list(batches)
        assert all(b.size == b.global_size == len(b.indices) for b in out)
        return [b.data for b in out]

    whole = stream(ds, 0)
    _same(whole, stream(mapped, 0))
    start = _CUT_AHEAD + 3  # inside the second group
    resumed = stream(ds, start)
    _same(whole[:start] + resumed, whole)
