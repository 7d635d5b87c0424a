"""Where a pipeline's elements come from, and how handles become data.

Each root turns handles (see ``mirrorfit.data.sequences``) into data:
``batch(handles)`` returns one batched element, ``samples(handles)`` a list of
samples (for maps that run per sample). Slices gather a whole batch with one
``index_select`` per tensor; torch Datasets and generators go sample by sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

from mirrorfit.data.sequences import Chunk, RangeSeq, Seq, StreamSeq
from mirrorfit.data.sources import gather_batches, row_bytes, to_tensor
from mirrorfit.data.trees import collate, flatten, leaves, unbatch

__all__ = ["Elements", "GeneratorElements", "SliceElements", "TorchElements", "describe_handles"]

_SHOWN = 8  # indices named in an error message


class Elements(Protocol):
    """A pipeline's root: its handle sequence and how to fetch handles."""

    indexable: bool

    def seq(self) -> Seq: ...

    def batch(self, handles: Chunk) -> Any: ...

    def samples(self, handles: Chunk) -> list[Any]: ...

    def positions(self, handles: Chunk) -> list[int]: ...

    def describe(self) -> str: ...


class SliceElements:
    """Rows of tensors that share their first axis (``from_tensor_slices``, ``cache``).

    Args:
        structure: a tensor, or a tuple/list/dict (nested) of arrays or tensors.
        label: what an element is called in errors ("sample", "cached element").
    """

    indexable = True

    def __init__(self, structure: Any, label: str = "sample") -> None:
        self.structure = _as_tensors(structure)
        self.label = label
        self.length = _common_length(self.structure)
        self._leaves, self._rebuild = flatten(self.structure)
        self.row_bytes = row_bytes(self._leaves)
        #: a flat tuple of tensors: every batch is already the tuple the trainer takes
        self.yields_tuples = self._rebuild is tuple

    def seq(self) -> Seq:
        return RangeSeq(self.length)

    def batch(self, handles: Chunk) -> Any:
        # one vectorised gather per tensor: no per-sample Python
        return self._rebuild(iter([t.index_select(0, handles) for t in self._leaves]))

    def batches(self, handles: torch.Tensor, size: int) -> Iterator[Any]:
        """The batches of ``size`` consecutive ``handles`` (the last may be smaller): one
        gather per tensor for all of them, each batch a view of it (the same values as
        ``batch`` per piece, with a fraction of the calls)."""
        batches = gather_batches(self._leaves, handles, size)
        if self.yields_tuples:  # zip builds each batch in C
            return batches
        return (self._rebuild(iter(leaves)) for leaves in batches)

    def samples(self, handles: Chunk) -> list[Any]:
        return unbatch(self.batch(handles))

    def positions(self, handles: Chunk) -> list[int]:
        return handles.tolist()  # type: ignore[union-attr]

    def describe(self) -> str:
        return f"slices({self.length})" if self.label == "sample" else f"cached({self.length})"


class TorchElements:
    """A map-style ``torch.utils.data.Dataset``: ``dataset[i]`` per sample, then stacked."""

    indexable = True
    label = "sample"

    def __init__(self, dataset: TorchDataset[Any]) -> None:
        if isinstance(dataset, IterableDataset):
            raise TypeError(
                f"from_torch needs a map-style Dataset (with __getitem__ and __len__); received "
                f"the IterableDataset {type(dataset).__name__}. Use "
                "Dataset.from_generator(lambda: iter(dataset)) instead."
            )
        try:
            self.length = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"from_torch needs a Dataset with __len__; received "
                            f"{type(dataset).__name__} without one.") from None
        self.dataset = dataset

    def seq(self) -> Seq:
        return RangeSeq(self.length)

    def batch(self, handles: Chunk) -> Any:
        return collate_named(self.samples(handles), self, handles)

    def samples(self, handles: Chunk) -> list[Any]:
        return [_as_element(self.dataset[i]) for i in self.positions(handles)]

    def positions(self, handles: Chunk) -> list[int]:
        return handles.tolist()  # type: ignore[union-attr]

    def describe(self) -> str:
        return f"torch({type(self.dataset).__name__}, {self.length})"


class GeneratorElements:
    """Samples from ``fn()``, a fresh iterator per pass; handles carry the samples."""

    indexable = False
    label = "generator element"

    def __init__(self, fn: Callable[[], Iterable[Any]]) -> None:
        if not callable(fn):
            raise TypeError(
                f"from_generator needs a function that returns a fresh iterator each pass; "
                f"received a {type(fn).__name__}. Wrap it: Dataset.from_generator(lambda: ...)."
            )
        self.fn = fn

    def seq(self) -> Seq:
        return StreamSeq(self.fn)

    def batch(self, handles: Chunk) -> Any:
        return collate_named(self.samples(handles), self, handles)

    def samples(self, handles: Chunk) -> list[Any]:
        return [_as_element(sample) for _, sample in handles]

    def positions(self, handles: Chunk) -> list[int]:
        return [pos for pos, _ in handles]

    def describe(self) -> str:
        return f"generator({getattr(self.fn, '__qualname__', type(self.fn).__name__)})"


def describe_handles(elements: Elements, handles: Chunk) -> str:
    """'the sample at index 7' or 'the batch of samples at indices [..] (32 in all)'."""
    label = getattr(elements, "label", "sample")
    pos = elements.positions(handles)
    if len(pos) == 1:
        return f"the {label} at index {pos[0]}"
    shown = ", ".join(str(p) for p in pos[:_SHOWN]) + (", ..." if len(pos) > _SHOWN else "")
    return f"the batch of {label}s at indices [{shown}] ({len(pos)} in all)"


def collate_named(samples: list[Any], elements: Elements, handles: Chunk) -> Any:
    """``collate`` whose errors name the samples involved."""
    try:
        return collate(samples)
    except (TypeError, RuntimeError, ValueError) as err:
        kind = type(err) if type(err) in (TypeError, RuntimeError, ValueError) else ValueError
        raise kind(f"batch() could not stack {describe_handles(elements, handles)}: {err} "
                        "Give every element the same structure and shapes (e.g. pad or resize "
                        "in a map() before batch()).") from err


def _as_element(sample: Any) -> Any:
    # lists are sequences of fields, as torch's default_collate reads them
    return tuple(sample) if isinstance(sample, list) else sample


def _as_tensors(structure: Any) -> Any:
    if isinstance(structure, Mapping):
        return {k: _as_tensors(v) for k, v in structure.items()}
    if isinstance(structure, tuple):
        return tuple(_as_tensors(v) for v in structure)
    return to_tensor(structure)


def _common_length(structure: Any) -> int:
    lengths: dict[str, int] = {}
    for name, leaf in leaves(structure):
        if leaf.dim() == 0:
            raise ValueError(f"from_tensor_slices needs arrays with a sample axis; {name} is a "
                             f"scalar ({leaf.item()!r}). Pass arrays of shape (n, ...).")
        lengths[name] = int(leaf.shape[0])
    if not lengths:
        raise ValueError("from_tensor_slices received an empty structure; pass arrays, e.g. "
                         "Dataset.from_tensor_slices((x, y)).")
    if len(set(lengths.values())) > 1:
        got = ", ".join(f"{n}: {k}" for n, k in lengths.items())
        raise ValueError(f"from_tensor_slices needs the same number of samples in every array; "
                         f"received {got}. Pass arrays of equal length along the first axis.")
    return next(iter(lengths.values()))
