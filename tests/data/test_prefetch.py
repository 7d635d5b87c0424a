"""prefetch and parallel maps: same contents in the same order, work done ahead, clean stops.

No timings: overlap is shown by events that only a background producer can set.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mirrorfit.data import Dataset, MapFunctionError
from mirrorfit.data.prefetch import ordered_map, prefetch
from tests.data.helpers import epoch, ids, ys

WAIT_S = 10.0  # a safety net for a broken producer, never a measured duration


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mirrorfit-prefetch" and t.is_alive()]


def test_prefetch_keeps_contents_and_order() -> None:
    base = Dataset.from_tensor_slices(ids(50)).shuffle().map(lambda x, y: (x + 1, y)).batch(7)
    for world, rank in ((1, 0), (3, 2)):
        plain = epoch(base, 4, rank=rank, world=world)
        ahead = epoch(base.prefetch(3), 4, rank=rank, world=world)
        assert ys(ahead) == ys(plain)
        assert all(torch.equal(a.data[0], p.data[0]) for a, p in zip(ahead, plain, strict=True))


def test_prefetch_of_samples_and_parallel_maps_keep_order() -> None:
    ds = Dataset.from_tensor_slices(ids(600)).map(lambda x, y: (x, y + 1), 3).prefetch(2)
    assert [int(y) for _, y in ds] == list(range(1, 601))


def test_producer_maps_the_next_batch_while_the_step_runs() -> None:
    mapped = [threading.Event() for _ in range(4)]

    def mark(x, y):
        mapped[int(y[0]) // 2].set()
        return x, y

    base = Dataset.from_tensor_slices(ids(8)).batch(2).map(mark)
    it = iter(base)
    next(it)
    assert not mapped[1].is_set()  # without prefetch nothing runs ahead of the consumer
    it = iter(base.prefetch(2))
    next(it)  # "the step" on batch 0 starts now: batch 1 gets mapped meanwhile
    assert mapped[1].wait(WAIT_S)
    assert [b[1].tolist() for b in it] == [[2, 3], [4, 5], [6, 7]]


def test_producer_errors_reach_the_consumer_in_order() -> None:
    def bad(x, y):
        if int(y[0]) == 4:
            raise ValueError("corrupt")
        return x, y

    it = iter(Dataset.from_tensor_slices(ids(8)).batch(2).map(bad).prefetch(4))
    assert [next(it)[1].tolist() for _ in range(2)] == [[0, 1], [2, 3]]
    with pytest.raises(MapFunctionError, match=r"ValueError: corrupt.*indices \[4, 5\]"):
        next(it)


def test_closing_early_stops_the_producer() -> None:
    before = len(_prefetch_threads())
    it = iter(Dataset.from_tensor_slices(ids(10_000)).batch(2).prefetch(2))
    next(it)
    assert len(_prefetch_threads()) == before + 1
    it.close()  # type: ignore[attr-defined]
    assert len(_prefetch_threads()) == before


def test_prefetch_function_on_a_plain_iterator() -> None:
    assert list(prefetch(iter(range(100)), 3)) == list(range(100))
    assert list(prefetch(iter([]), 1)) == []


def test_ordered_map_keeps_input_order_whatever_finishes_first() -> None:
    def slow_for_small(i: int) -> int:
        time.sleep(0.001 * (i % 3 == 0))
        return i * i

    assert list(ordered_map(slow_for_small, range(30), 4)) == [i * i for i in range(30)]


def test_a_device_copy_maps_a_local_batch_and_keeps_its_sizes() -> None:
    # the CUDA prefetch's per-tensor work (copy, record_stream) goes through _map_item
    from mirrorfit.data.batches import LocalBatch
    from mirrorfit.data.prefetch import _map_item

    batch = LocalBatch((torch.ones(3, 2), {"w": torch.zeros(3)}), 3, 5)
    doubled = _map_item(lambda t: t + 1, batch)
    assert isinstance(doubled, LocalBatch) and (doubled.size, doubled.global_size) == (3, 5)
    assert torch.equal(doubled.data[0], torch.full((3, 2), 2.0))
    assert torch.equal(doubled.data[1]["w"], torch.ones(3))
