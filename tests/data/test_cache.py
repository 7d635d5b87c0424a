"""cache(): built once, reused from memory and from a file, invalidated by a changed source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mirrorfit.data import CacheMismatchError, Dataset, Replica
from tests.data.helpers import Counting, ids


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
