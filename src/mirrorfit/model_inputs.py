"""From what users pass to fit/evaluate/predict to this replica's batch streams,
with the checks that catch bad input before any step runs."""

from __future__ import annotations

import math
from typing import Any

from mirrorfit.advice import warn
from mirrorfit.class_weights import class_sample_weight
from mirrorfit.data.adapters import as_batch_stream
from mirrorfit.data.batches import BatchStream, FirstSteps
from mirrorfit.data.sources import TensorSource, leading_length, to_tensor
from mirrorfit.strategies.strategy import Strategy

_DEFAULT_BATCH = 32


def check_batch_size(batch_size: int | None, strategy: Strategy) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (the global batch), received "
                         f"{batch_size!r}.")
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and is smaller than the "
            f"{replicas} replicas in sync, so some replicas would get no sample. Use "
            f"batch_size >= {replicas}, e.g. batch_size = per_replica * "
            "strategy.num_replicas_in_sync."
        )


def stream_for(strategy: Strategy, x: Any, y: Any, sample_weight: Any, batch_size: int | None,
               *, shuffle: bool = False, seed: int = 0) -> BatchStream:
    """The (unshuffled unless asked) stream for evaluate/predict/validation."""
    if x is None:
        raise ValueError("x is None; pass arrays, tensors, a Dataset or a DataLoader.")
    check_batch_size(batch_size, strategy)
    size = batch_size if batch_size is not None or _batched(x) else _DEFAULT_BATCH
    return as_batch_stream(x, y, sample_weight, batch_size=size, replica=strategy.replica,
                           shuffle=shuffle, seed=seed)


def fit_streams(strategy: Strategy, x: Any, y: Any, sample_weight: Any, *,
                batch_size: int | None, shuffle: bool, seed: int, validation_split: float,
                validation_data: Any, validation_batch_size: int | None,
                class_weight: Any = None) -> tuple[BatchStream, BatchStream | None]:
    """Training stream and validation stream (or None); ``class_weight`` weighs the
    training samples only (Keras)."""
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), received {validation_split!r}.")
    if validation_split and validation_data is None:
        (x, y, sample_weight), validation_data = _split(x, y, sample_weight, validation_split)
    if class_weight is not None:
        if _batched(x):
            raise ValueError("class_weight works with arrays or tensors x, y; a Dataset or "
                             "DataLoader gives each element its weight itself, e.g. "
                             "ds.map(lambda x, y: (x, y, weights[y])).")
        sample_weight = class_sample_weight(y, class_weight, sample_weight)
    stream = stream_for(strategy, x, y, sample_weight, batch_size, shuffle=shuffle, seed=seed)
    n = stream.num_samples()
    if n is not None and n < strategy.num_replicas_in_sync:
        raise ValueError(f"The training data has {n} samples, fewer than the "
                         f"{strategy.num_replicas_in_sync} replicas in sync; give more data or "
                         "use fewer devices.")
    size = getattr(stream, "batch_size", None)
    if n and size and size > n and strategy.is_chief:
        warn(f"batch_size={size} is larger than the {n} training samples: each epoch is a "
             f"single batch of {n} (one optimizer step per epoch); use a smaller batch_size.")
    if validation_data is None:
        return stream, None
    vx, vy, vsw = _unpack_validation(validation_data)
    vbatch = validation_batch_size or (None if _batched(vx) else batch_size)
    return stream, stream_for(strategy, vx, vy, vsw, vbatch)


def _batched(x: Any) -> bool:
    """Objects that carry their own batch size (DataLoader, batched Dataset)."""
    return hasattr(x, "_as_batch_stream") or type(x).__name__ == "DataLoader"


def _unpack_validation(data: Any) -> tuple[Any, Any, Any]:
    if isinstance(data, list) and len(data) in (2, 3):  # Keras accepts [x, y] too
        data = tuple(data)
    if isinstance(data, tuple):
        if len(data) == 2:
            return data[0], data[1], None
        if len(data) == 3:
            return data
        raise ValueError(f"validation_data must be (x, y) or (x, y, sample_weight); received a "
                         f"tuple of {len(data)} elements.")
    return data, None, None


def _split(x: Any, y: Any, sw: Any, fraction: float) -> tuple[tuple[Any, Any, Any], Any]:
    """Keras's validation_split: the *last* ``fraction`` of the arrays, before shuffling
    (Keras's rounding: the first ``floor(n * (1 - fraction))`` samples train)."""
    if _batched(x) or not (hasattr(x, "shape") or isinstance(x, (tuple, dict))):
        raise ValueError("validation_split works with arrays or tensors only; pass "
                         "validation_data for datasets and loaders.")
    parts = [None if p is None else to_tensor(p) for p in (x, y, sw)]
    TensorSource([p for p in parts if p is not None])  # checks equal lengths
    n = leading_length(parts[0])
    cut = math.floor(n * (1.0 - fraction))
    if cut in (0, n):
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves "
            f"{'no training' if cut == 0 else 'no validation'} sample; use more data or "
            "another fraction."
        )
    head = tuple(None if p is None else _rows(p, 0, cut) for p in parts)
    tail = tuple(None if p is None else _rows(p, cut, n) for p in parts)
    return head, tail  # type: ignore[return-value]


def _rows(value: Any, start: int, stop: int) -> Any:
    if isinstance(value, dict):
        return {k: _rows(v, start, stop) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_rows(v, start, stop) for v in value)
    return value[start:stop]


def first_steps(stream: BatchStream, steps: int | None, arg: str, what: str) -> BatchStream:
    """``stream`` cut to its first ``steps`` global batches (``arg``: the argument's name);
    without ``steps``, an infinite stream (``what``) is an error rather than a loop that
    never ends.

    Raises:
        ValueError: ``steps`` not a positive integer, or missing for an infinite stream.
    """
    if steps is None:
        if getattr(stream, "infinite", False):
            raise ValueError(f"{what} is infinite (a Dataset repeated without a count), so "
                             f"it would never end; pass {arg}=N, the number of batches to "
                             "take, or give repeat() a count.")
        return stream
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{arg} must be a positive integer (global batches); received "
                         f"{steps!r}.")
    return FirstSteps(stream, steps)
