"""cache(): built once, reused from memory and from a file, invalidated by a changed source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mirrorfit.data import CacheMismatchError, Dataset, Replica
from tests.data.helpers import Counting, epoch, ids, ys


def _y(ds: Dataset) -> list[int]:
    return [v for b in ds for v in b[1].tolist()]


class Calls:
    """A map function that counts its calls (a stand-in for slow decoding)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.n += 1
        return x * 2, y


def test_memory_cache_maps_once_and_later_stages_still_reshuffle() -> None:
    calls = Calls()
    ds = Dataset.from_tensor_slices(ids(10)).map(calls).cache().shuffle(seed=0).batch(4)
    first, second = _y(ds), _y(ds)
    assert calls.n == 10
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    xb, yb = next(iter(ds))
    assert xb[:, 0].tolist() == [2.0 * v for v in yb.tolist()]


def test_cached_generator_becomes_indexable() -> None:
    runs = []

    def gen():
        runs.append(1)
        return ((torch.tensor([i]), i) for i in range(7))

    ds = Dataset.from_generator(gen).cache().shuffle(seed=1).batch(3)
    assert sorted(_y(ds)) == sorted(_y(ds)) == list(range(7)) and len(runs) == 1
    stream = ds._as_batch_stream(replica=Replica(), shuffle=True, seed=0)
    assert stream.steps_per_epoch() == 3 and stream.num_samples() == 7


def test_file_cache_is_reused_by_a_second_run(tmp_path: Path) -> None:
    path = tmp_path / "train.cache"
    first_calls, second_calls = Calls(), Calls()
    x, y = ids(10)
    first = _y(Dataset.from_tensor_slices((x, y)).map(first_calls).cache(path).batch(4))
    assert path.exists() and first_calls.n == 10
    # a "second run": a new pipeline over equal data and an equal map function
    second = _y(Dataset.from_tensor_slices((x.clone(), y.clone())).map(second_calls)
                .cache(path).batch(4))
    assert second == first and second_calls.n == 0


def test_file_cache_from_a_changed_source_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "train.cache"
    x, y = ids(10)
    _y(Dataset.from_tensor_slices((x, y)).cache(path).batch(4))
    x[3, 0] = 99.0  # one changed value
    changed = Dataset.from_tensor_slices((x, y)).cache(path).batch(4)
    with pytest.raises(CacheMismatchError, match=r"train.cache was written for a different "
                                                 r"pipeline.*on_mismatch='rebuild'"):
        list(changed)


def test_file_cache_from_a_changed_map_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _y(Dataset.from_tensor_slices(ids(6)).map(lambda x, y: (x, y)).cache(path).batch(2))
    with pytest.raises(CacheMismatchError, match="slices\\(6\\) -> map"):
        _y(Dataset.from_tensor_slices(ids(6)).map(lambda x, y: (x + 1, y)).cache(path).batch(2))


def test_rebuild_overwrites_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _y(Dataset.from_tensor_slices(ids(6)).cache(path).batch(6))
    rebuilt = Dataset.from_tensor_slices(ids(4)).cache(path, on_mismatch="rebuild").batch(6)
    assert _y(rebuilt) == [0, 1, 2, 3]
    again = Calls()
    assert _y(Dataset.from_tensor_slices(ids(4)).cache(path).map(again).batch(6)) == [0, 1, 2, 3]


def test_a_file_that_is_not_a_cache_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"precious weights")
    ds = Dataset.from_tensor_slices(ids(4)).cache(path, on_mismatch="rebuild").batch(2)
    with pytest.raises(CacheMismatchError, match="not a readable mirrorfit cache"):
        list(ds)
    assert path.read_bytes() == b"precious weights"


def test_torch_dataset_fingerprint_sees_its_samples(tmp_path: Path) -> None:
    path = tmp_path / "t.cache"
    _y(Dataset.from_torch(Counting(9)).cache(path).batch(3))
    source = Counting(9)
    assert _y(Dataset.from_torch(source).cache(path).batch(3)) == list(range(9))
    assert source.reads == 8  # the fingerprint's sampled items only, the rest from the file
    with pytest.raises(CacheMismatchError):
        list(Dataset.from_torch(Counting(10)).cache(path).batch(3))


def test_empty_cache_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty dataset"):
        list(Dataset.from_tensor_slices(ids(4)).skip(4).cache().batch(2))


# -- batch().cache(): tf.data's usual order, each replica keeping its own shares ------------

def _shares(ds: Dataset, e: int, rank: int, world: int, seed: int = 0) -> list[list[int]]:
    return ys(epoch(ds, e, rank=rank, world=world, seed=seed))


def test_batch_then_cache_maps_once_and_keeps_the_first_pass_batches() -> None:
    calls = Calls()
    # the README's pipeline: a shuffle before cache() is frozen at its first order (as in tf.data)
    ds = Dataset.from_tensor_slices(ids(10)).shuffle().map(calls).batch(4).cache().prefetch()
    first = [b[1].tolist() for b in ds]
    assert [b[1].tolist() for b in ds] == first and calls.n == 10
    assert sorted(v for b in first for v in b) == list(range(10)) and len(ds) == 3
    xb, yb = next(iter(ds))
    assert xb[:, 0].tolist() == [2.0 * v for v in yb.tolist()]


def test_shuffle_after_a_cache_of_batches_moves_whole_batches() -> None:
    ds = Dataset.from_tensor_slices(ids(12)).batch(3).cache().shuffle(seed=0)
    first, second = ([b[1].tolist() for b in ds] for _ in range(2))
    assert first != second and sorted(first) == sorted(second) == [
        [0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_each_replica_caches_and_maps_only_its_share() -> None:
    calls = Calls()
    ds = Dataset.from_tensor_slices(ids(23)).map(calls).batch(6).cache().shuffle()
    shares = [epoch(ds, e, rank=0, world=3) for e in (0, 1)]
    assert calls.n == sum(b.size for b in shares[0]) == 2 + 2 + 2 + 2  # 6,6,6,5 split 3 ways
    # epoch 1 reorders the cached shares; nothing is mapped again
    assert ys(shares[0]) != ys(shares[1]) and sorted(ys(shares[0])) == sorted(ys(shares[1]))
    assert calls.n == 8


def test_cache_of_batches_follows_the_restored_seed() -> None:
    # a shuffle before cache() is frozen at the run's seed; a resumed run restores that seed
    ds = Dataset.from_tensor_slices(ids(23)).shuffle().batch(5).cache()
    a = ds._as_batch_stream(replica=Replica(1, 2), shuffle=True, seed=11)
    b = Dataset.from_tensor_slices(ids(23)).shuffle().batch(5).cache()._as_batch_stream(
        replica=Replica(1, 2), shuffle=True, seed=0)
    assert b.steps_per_epoch() == 5  # builds the cache at seed 0 first, as fit does
    b.load_state_dict(a.state_dict())
    assert ys(list(b.iter_epoch(1, 2))) == ys(list(a.iter_epoch(1)))[2:]
    assert a.num_samples() == b.num_samples() == 23


def test_file_cache_of_batches_is_one_file_per_replica(tmp_path: Path) -> None:
    path = tmp_path / "train.cache"

    def pipeline(calls: Calls) -> Dataset:
        return Dataset.from_tensor_slices(ids(10)).map(calls).batch(4).cache(path)

    built = [Calls(), Calls()]  # one per replica (its counter is part of the fingerprint)
    expected = [_shares(pipeline(built[r]), 0, r, 2) for r in (0, 1)]
    assert [c.n for c in built] == [5, 5]  # batches 4, 4, 2: each replica mapped its halves
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.cache.0-of-2",
                                                          "train.cache.1-of-2"]
    again = [Calls(), Calls()]  # a second run reads its files and maps nothing
    assert [_shares(pipeline(again[r]), 0, r, 2) for r in (0, 1)] == expected
    assert [c.n for c in again] == [0, 0]
    assert _shares(pipeline(Calls()), 0, 0, 1) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert (tmp_path / "train.cache").exists()  # one replica: the path itself
    with pytest.raises(CacheMismatchError, match="batch\\(3\\)"):
        _shares(Dataset.from_tensor_slices(ids(10)).batch(3).cache(path), 0, 0, 2)


def test_empty_cache_of_batches_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty dataset"):
        list(Dataset.from_tensor_slices(ids(4)).skip(4).batch(2).cache())
