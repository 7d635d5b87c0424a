"""Background work: parallel fetch/map (``num_parallel_calls``) and ``prefetch``.

``ordered_map`` runs a function over items on a thread pool and yields results
in input order. ``prefetch`` runs a whole iterator in one producer thread, up
to ``size`` items ahead of the consumer, so reading and mapping batch ``k+1``
overlaps with the training step on batch ``k``. Threads suffice: gathers,
``torch`` ops and I/O release the GIL.

On CUDA the producer also pins each batch's memory, so the trainer's
``.to(device, non_blocking=True)`` is a true asynchronous copy; with a
``device``, the producer issues that copy itself on a side stream and the
consumer waits on an event (no host synchronisation).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from mirrorfit.data.batches import LocalBatch
from mirrorfit.data.trees import tree_map

__all__ = ["ordered_map", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")
_POLL_S = 0.05
_JOIN_S = 10.0


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each item, ``workers`` at a time, yielded in input order."""
    if workers <= 1:
        return map(fn, items)  # no generator frame of our own on the single-thread hot path
    return _pooled(fn, items, workers)


def _pooled(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="mirrorfit-map") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > 2 * workers:  # keep every thread busy while one is consumed
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass
class _Failure:
    error: BaseException


_DONE = object()


def prefetch(items: Iterator[T], size: int, device: torch.device | None = None) -> Iterator[T]:
    """``items``, produced by a background thread up to ``size`` ahead.

    Errors raised while producing are re-raised in the consumer, in order. Closing
    the returned generator early stops the producer after its current item.
    """
    copier = _CudaCopier(device) if torch.cuda.is_available() else None
    box: queue.Queue[Any] = queue.Queue(maxsize=size)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(items, box, stop, copier),
                              name="mirrorfit-prefetch", daemon=True)
    thread.start()
    try:
        while (got := box.get()) is not _DONE:
            if isinstance(got, _Failure):
                raise got.error
            item, event = got
            yield copier.finish(item, event) if copier is not None else item
    finally:
        stop.set()
        while not box.empty():  # free a producer blocked on a full queue
            box.get_nowait()
        thread.join(_JOIN_S)


def _produce(items: Iterator[Any], box: queue.Queue[Any], stop: threading.Event,
             copier: _CudaCopier | None) -> None:
    try:
        for item in items:
            staged = copier.start(item) if copier is not None else (item, None)
            if not _put(box, staged, stop):
                return
        _put(box, _DONE, stop)
    except BaseException as err:  # handed to the consumer, raised there
        _put(box, _Failure(err), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # in this thread: a generator cannot be closed while another runs it


def _put(box: queue.Queue[Any], value: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            box.put(value, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


class _CudaCopier:
    """Pins batches in the producer; with a device, copies them there on a side stream."""

    def __init__(self, device: torch.device | None) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device is not None else None

    def start(self, item: Any) -> tuple[Any, Any]:
        pinned = _map_item(lambda t: t.pin_memory() if t.device.type == "cpu" else t, item)
        if self.stream is None:
            return pinned, None
        with torch.cuda.stream(self.stream):
            # non_blocking from pinned memory: the copy overlaps with the running step
            moved = _map_item(lambda t: t.to(self.device, non_blocking=True), pinned)
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def finish(self, item: Any, event: Any) -> Any:
        if event is None:
            return item
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)  # GPU-side wait, not a host sync
        # the side stream allocated these; tell the allocator the step's stream uses them
        _map_item(lambda t: t.record_stream(current), item)
        return item


def _map_item(fn: Callable[[torch.Tensor], Any], item: Any) -> Any:
    if isinstance(item, LocalBatch):
        return item._replace(data=tree_map(fn, item.data))
    return tree_map(fn, item)
