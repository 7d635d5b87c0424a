"""A batched Dataset as the trainer's BatchStream: shares, order, resume, state."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from mirrorfit.data import BatchStream, Dataset, IndexedBatches, Replica
from mirrorfit.data.adapters import as_batch_stream
from mirrorfit.data.sources import TensorSource
from tests.data.helpers import Counting, epoch, ids, ys

N = 23  # not a multiple of the batch size nor of any replica count


def _gen() -> object:
    return ((torch.tensor([float(i), -float(i)]), i) for i in range(N))


PIPELINES: dict[str, Callable[[], Dataset]] = {
    "slices": lambda: Dataset.from_tensor_slices(ids(N)).shuffle().batch(5),
    "buffered": lambda: Dataset.from_tensor_slices(ids(N)).shuffle(4).batch(5),
    "sample-map": lambda: Dataset.from_tensor_slices(ids(N)).shuffle().map(
        lambda x, y: (x, y)).batch(5),
    "batch-map": lambda: Dataset.from_tensor_slices(ids(N)).shuffle().batch(5).map(
        lambda x, y: (x, y)),
    "torch": lambda: Dataset.from_torch(Counting(N)).shuffle().batch(5),
    "generator": lambda: Dataset.from_generator(_gen).shuffle(6).batch(5),
    "cached": lambda: Dataset.from_generator(_gen).cache().shuffle().batch(5),
    "repeat": lambda: Dataset.from_tensor_slices(ids(N)).shuffle().repeat(2).batch(5),
    "batch-shuffle": lambda: Dataset.from_tensor_slices(ids(N)).batch(5).shuffle(seed=1).take(4),
    "tiny-last": lambda: Dataset.from_tensor_slices(ids(N)).batch(11),  # last batch of 1
    # tf.data's usual order: cache batches (each replica keeps its shares), then reorder them
    "batch-cache": lambda: Dataset.from_tensor_slices(ids(N)).shuffle().map(
        lambda x, y: (x, y)).batch(5).cache().shuffle().prefetch(),
    "batch-cache-tiny": lambda: Dataset.from_torch(Counting(N)).batch(11).map(
        lambda x, y: (x, y)).cache(),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_replica_shares_rebuild_the_one_replica_batches(name: str) -> None:
    whole = ys(epoch(PIPELINES[name](), 1))
    assert sum(len(b) for b in whole) > 0
    for world in (2, 3, 4):
        shares = [epoch(PIPELINES[name](), 1, rank=r, world=world) for r in range(world)]
        for step, expected in enumerate(whole):
            got = [v for r in range(world) for v in ys(shares[r])[step]]
            assert got == expected  # same samples, same order, no duplicates
            assert {s[step].global_size for s in shares} == {len(expected)}
        assert all(len(s) == len(whole) for s in shares)


def test_order_depends_on_seed_and_epoch_only() -> None:
    ds = Dataset.from_tensor_slices(ids(N)).shuffle().batch(5)
    assert ys(epoch(ds, 0)) == ys(epoch(ds, 0))
    assert ys(epoch(ds, 0)) != ys(epoch(ds, 1))
    assert ys(epoch(ds, 0, seed=1)) != ys(epoch(ds, 0, seed=2))
    fixed = Dataset.from_tensor_slices(ids(N)).shuffle(seed=7).batch(5)
    assert ys(epoch(fixed, 0, seed=1)) == ys(epoch(fixed, 0, seed=2))


def test_full_shuffle_matches_the_array_path_order() -> None:
    x, y = ids(N)
    arrays = IndexedBatches(TensorSource((x, y)), 5, Replica(), shuffle=True, seed=4)
    dataset = Dataset.from_tensor_slices((x, y)).shuffle().batch(5)
    for e in (0, 3):
        assert ys(epoch(dataset, e, seed=4)) == [b.data[1].tolist() for b in arrays.iter_epoch(e)]


def test_empty_share_yields_one_dummy_sample_of_size_zero() -> None:
    ds = Dataset.from_tensor_slices(ids(5)).batch(4)  # last global batch holds 1 sample
    last = epoch(ds, 0, rank=2, world=3)[-1]
    assert (last.size, last.global_size) == (0, 1)
    assert len(last.data[1]) == 1


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_resume_equals_the_tail_of_the_epoch(name: str) -> None:
    full = ys(epoch(PIPELINES[name](), 2, rank=1, world=2))
    for start in (1, 3, len(full)):
        assert ys(epoch(PIPELINES[name](), 2, rank=1, world=2, start=start)) == full[start:]


def test_resume_reads_and_maps_nothing_it_skips() -> None:
    calls: list[int] = []

    def mark(x, y):
        calls.append(int(y))
        return x, y

    source = Counting(N)
    ds = Dataset.from_torch(source).shuffle().map(mark).batch(5)
    list(ds._as_batch_stream(replica=Replica(), shuffle=True, seed=0).iter_epoch(0, 3))
    assert source.reads == len(calls) == N - 15


def test_each_replica_maps_only_its_share() -> None:
    calls: list[int] = []
    ds = Dataset.from_tensor_slices(ids(N)).map(lambda x, y: calls.append(1) or (x, y)).batch(6)
    shares = epoch(ds, 0, rank=0, world=3)
    assert len(calls) == sum(b.size for b in shares) == 2 + 2 + 2 + 2  # 6,6,6,5 split 3 ways


def test_stream_satisfies_the_protocol_and_counts() -> None:
    stream = Dataset.from_tensor_slices(ids(N)).batch(5, drop_remainder=True)._as_batch_stream(
        replica=Replica(), shuffle=False, seed=0)
    assert isinstance(stream, BatchStream)
    assert (stream.steps_per_epoch(), stream.num_samples()) == (4, 20)
    gen = Dataset.from_generator(_gen).batch(5)._as_batch_stream(
        replica=Replica(), shuffle=False, seed=0)
    assert (gen.steps_per_epoch(), gen.num_samples()) == (None, None)


def test_adapter_dispatches_to_the_dataset() -> None:
    ds = Dataset.from_tensor_slices(ids(N)).batch(5)
    stream = as_batch_stream(ds, batch_size=None, replica=Replica(0, 2), shuffle=True, seed=0)
    first = next(iter(stream.iter_epoch(0)))
    assert (first.size, first.global_size, first.data[1].tolist()) == (3, 5, [0, 1, 2])


def test_state_dict_restores_the_seed_and_checks_the_batch_size() -> None:
    ds = Dataset.from_tensor_slices(ids(N)).shuffle().batch(5)
    a = ds._as_batch_stream(replica=Replica(), shuffle=True, seed=11)
    b = ds._as_batch_stream(replica=Replica(), shuffle=True, seed=0)
    b.load_state_dict(a.state_dict())
    assert ys(list(a.iter_epoch(1))) == ys(list(b.iter_epoch(1)))
    other = Dataset.from_tensor_slices(ids(N)).batch(4)._as_batch_stream(
        replica=Replica(), shuffle=True, seed=0)
    with pytest.raises(ValueError, match=r"batch size 5.*\.batch\(5\)"):
        other.load_state_dict(a.state_dict())


def test_batch_size_with_a_dataset_says_whether_it_is_batched() -> None:
    def stream(ds: Dataset) -> object:
        return as_batch_stream(ds, batch_size=64, replica=Replica(), shuffle=True, seed=0)

    with pytest.raises(ValueError, match=r"unbatched Dataset.*Add \.batch\(64\)"):
        stream(Dataset.from_tensor_slices(ids(N)).shuffle())
    with pytest.raises(ValueError, match=r"batched by \.batch\(5\).*received batch_size=64"):
        stream(Dataset.from_tensor_slices(ids(N)).batch(5))


def test_fit_needs_a_batched_dataset() -> None:
    with pytest.raises(ValueError, match=r"must be batched.*\.batch\(global_batch\)"):
        Dataset.from_tensor_slices(ids(4))._as_batch_stream(
            replica=Replica(), shuffle=True, seed=0)


def test_negative_start_step_is_an_error() -> None:
    stream = Dataset.from_tensor_slices(ids(4)).batch(2)._as_batch_stream(
        replica=Replica(), shuffle=True, seed=0)
    with pytest.raises(ValueError, match="received -1"):
        stream.iter_epoch(0, -1)
