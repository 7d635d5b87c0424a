"""Sources: fetch samples by index. Arrays and tensors are indexed in one
vectorised gather (no per-sample Python); torch Datasets sample by sample and
collate."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import default_collate


@runtime_checkable
class Source(Protocol):
    def __len__(self) -> int: ...

    def fetch(self, indices: torch.Tensor) -> tuple[Any, ...]:
        """The samples at ``indices`` as a batch (a tuple of tensor structures)."""


def to_tensor(value: Any, name: str = "x") -> Any:
    """numpy arrays / tensors / nested tuples and dicts of them -> tensors."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == np.float64:  # Keras habit: float64 numpy becomes float32
            value = value.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        return {k: to_tensor(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (tuple, list)) and value and not np.isscalar(value[0]):
        return tuple(to_tensor(v, f"{name}[{i}]") for i, v in enumerate(value))
    if isinstance(value, (list, tuple)):
        return to_tensor(np.asarray(value), name)
    raise TypeError(
        f"{name} must be a numpy array, a torch tensor, or a tuple/dict of them; "
        f"received {type(value).__name__}."
    )


def leading_length(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() > 0 else 0
    if isinstance(value, Mapping):
        return leading_length(next(iter(value.values())))
    return leading_length(value[0])


#: at most this many bytes are gathered at once when batches are gathered in groups
GATHER_BYTES = 4 << 20
MAX_GROUP = 64  # batches per group at most


def batches_per_gather(row_bytes: int, batch_size: int) -> int:
    """How many batches of ``batch_size`` rows of ``row_bytes`` to gather at once: up to
    ``MAX_GROUP``, within ``GATHER_BYTES`` (at least one): a group amortizes the call
    costs of small batches and never holds more than a few MiB beyond one batch."""
    return max(1, min(MAX_GROUP, GATHER_BYTES // max(1, row_bytes * batch_size)))


def batch_sizes(n: int, size: int) -> list[int]:
    """The sizes of the batches of ``size`` that ``n`` rows make (the last may be smaller)."""
    return [size] * (n // size) + ([n % size] if n % size else [])


def split_rows(tensor: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """``tensor.split(size)`` along the rows (the last piece may be smaller), through
    ``split_with_sizes``, whose C path cuts views about a third faster than ``split``'s."""
    return tensor.split_with_sizes(batch_sizes(tensor.shape[0], size))


def gather_batches(tensors: Sequence[torch.Tensor], indices: torch.Tensor,
                   size: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The batches of ``size`` consecutive ``indices`` (the last may be smaller), one
    tuple of views per batch: one ``index_select`` per tensor for all of them."""
    return zip(*[split_rows(t.index_select(0, indices), size) for t in tensors], strict=True)


def row_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Bytes of one row (sample) across ``tensors``."""
    return sum(math.prod(t.shape[1:]) * t.element_size() for t in tensors if t.dim())


def _gather(value: Any, idx: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.index_select(0, idx)
    if isinstance(value, Mapping):
        return {k: _gather(v, idx) for k, v in value.items()}
    return tuple(_gather(v, idx) for v in value)


class TensorSource:
    """Samples are rows of tensors that share their first dimension.

    Args:
        parts: e.g. ``(x, y)``; each a tensor or a tuple/dict of tensors.
        names: what to call each part in errors ("x", "y", "sample_weight").
    """

    def __init__(self, parts: Sequence[Any], names: Sequence[str] = ("x", "y", "sample_weight")):
        self.parts = tuple(to_tensor(p, n) for p, n in zip(parts, names, strict=False))
        lengths = [leading_length(p) for p in self.parts]
        if len(set(lengths)) > 1:
            got = ", ".join(f"{n}: {n_}" for n, n_ in zip(names, lengths, strict=False))
            raise ValueError(
                f"All inputs must have the same number of samples; received {got}. "
                "Pass arrays of equal length along the first axis."
            )
        self._len = lengths[0]
        self._flat = all(isinstance(p, torch.Tensor) for p in self.parts)
        self.row_bytes = row_bytes(self.parts) if self._flat else 0

    def __len__(self) -> int:
        return self._len

    def fetch(self, indices: torch.Tensor) -> tuple[Any, ...]:
        if self._flat:  # the common case: a tuple of plain tensors
            return tuple([p.index_select(0, indices) for p in self.parts])
        return tuple(_gather(p, indices) for p in self.parts)

    def fetch_split(self, indices: torch.Tensor, size: int) -> Iterator[tuple[Any, ...]] | None:
        """The batches of ``size`` consecutive ``indices``, gathered at once: one
        ``index_select`` per tensor, each batch a view of it (None unless every part is
        a plain tensor)."""
        if not self._flat:
            return None
        return gather_batches(self.parts, indices, size)


class DatasetSource:
    """A map-style ``torch.utils.data.Dataset``; samples collated like a DataLoader."""

    def __init__(self, dataset: TorchDataset, collate_fn: Callable[[list[Any]], Any] | None = None):
        try:
            self._len = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"A torch Dataset passed to fit/evaluate/predict needs __len__; received "
                f"{type(dataset).__name__} without one. Wrap an iterable with "
                "mirrorfit.data.Dataset.from_generator instead."
            ) from None
        self.dataset = dataset
        self.collate_fn = collate_fn or default_collate

    def __len__(self) -> int:
        return self._len

    def fetch(self, indices: torch.Tensor) -> tuple[Any, ...]:
        batch = self.collate_fn([self.dataset[i] for i in indices.tolist()])
        if isinstance(batch, (tuple, list)):
            return tuple(batch)
        return (batch,)
