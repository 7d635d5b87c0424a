"""Batches of tensors gathered a group at a time are the batch-by-batch gathers
(Dataset slices, and in-memory arrays given to fit)."""

from __future__ import annotations

from typing import Any

import torch

from mirrorfit.data import Dataset
from mirrorfit.data.batches import IndexedBatches
from mirrorfit.data.sequences import _CUT_AHEAD
from mirrorfit.data.sharding import Replica, epoch_order
from mirrorfit.data.sources import (
    GATHER_BYTES,
    MAX_GROUP,
    TensorSource,
    batches_per_gather,
    split_rows,
)
from mirrorfit.data.trees import flatten

N = 32 * _CUT_AHEAD * 2 + 5  # two whole groups, a partial group, a partial last batch


def _data() -> tuple[dict[str, Any], torch.Tensor]:
    x = torch.randn(N, 3, 2)
    return {"x": x, "pair": (x.sum((1, 2)), torch.arange(N))}, torch.arange(N) % 7


def _flat(batch: Any) -> list[torch.Tensor]:
    return flatten(batch)[0]


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
        assert all(b.size == b.global_size == len(b.data[1]) for b in out)
        return [b.data for b in out]

    whole = stream(ds, 0)
    _same(whole, stream(mapped, 0))
    start = _CUT_AHEAD + 3  # inside the second group
    resumed = stream(ds, start)
    _same(whole[:start] + resumed, whole)


def test_one_replica_epoch_over_arrays_gathers_per_group() -> None:
    x, y = torch.randn(N, 3), torch.arange(N)
    stream = IndexedBatches(TensorSource((x, y)), 32, Replica(), shuffle=True, seed=5)
    order = epoch_order(N, seed=5, epoch=2, shuffle=True)
    expected = [(x[i], y[i], i) for i in order.split(32)]
    for start in (0, MAX_GROUP + 3):  # from the start, and resumed inside the second group
        got = list(stream.iter_epoch(2, start))
        assert len(got) == len(expected) - start
        for b, (xe, ye, ie) in zip(got, expected[start:], strict=True):
            assert torch.equal(b.data[0], xe) and torch.equal(b.data[1], ye)
            assert b.size == b.global_size == len(ie)
    storages = {b.data[0].untyped_storage().data_ptr() for b in stream.iter_epoch(2)}
    assert len(storages) == -(-len(expected) // MAX_GROUP)  # one gather per group


def test_one_replica_epoch_over_nested_arrays_is_batch_by_batch() -> None:
    x, y = {"a": torch.randn(N, 2), "b": torch.arange(N)}, torch.arange(N)
    got = list(IndexedBatches(TensorSource((x, y)), 32, Replica()).iter_epoch(0))
    assert [b.data[1].tolist() for b in got] == [c.tolist() for c in torch.arange(N).split(32)]
    assert all(torch.equal(b.data[0]["b"], b.data[1]) for b in got)


def test_a_group_holds_a_few_mib_at_most() -> None:
    assert batches_per_gather(3136 + 8, 32) == 41  # MNIST rows: 41 batches in 4 MiB
    assert batches_per_gather(4, 32) == MAX_GROUP
    assert batches_per_gather(3 * 224 * 224 * 4, 256) == 1  # big images: batch by batch
    x = torch.zeros(N, 1024, 8)  # 32 KiB rows: 4 batches of 32 per gather
    stream = IndexedBatches(TensorSource((x,)), 32, Replica())
    storages = [b.data[0].untyped_storage() for b in stream.iter_epoch(0)]
    assert max(s.nbytes() for s in storages) <= GATHER_BYTES
    assert len({s.data_ptr() for s in storages}) == -(-len(storages) // 4)


def test_split_rows_cuts_as_split_does() -> None:
    x = torch.arange(70 * 3).view(70, 3)
    for size in (1, 7, 32, 70, 100):
        got, want = split_rows(x, size), x.split(size)
        assert len(got) == len(want)
        assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
        assert {g.untyped_storage().data_ptr() for g in got} == {x.untyped_storage().data_ptr()}
    assert split_rows(x[:0], 32) == ()


def test_plain_iteration_yields_tuples_for_tuples_and_one_tensor() -> None:
    x, y = torch.randn(N, 2), torch.arange(N)
    pairs = list(Dataset.from_tensor_slices((x, y)).batch(32))
    singles = list(Dataset.from_tensor_slices(x).batch(32))
    assert all(type(b) is tuple and len(b) == 2 for b in pairs)
    assert all(type(b) is tuple and len(b) == 1 for b in singles)
    assert torch.equal(torch.cat([b[1] for b in pairs]), y)
    assert torch.equal(torch.cat([b[0] for b in singles]), x)
