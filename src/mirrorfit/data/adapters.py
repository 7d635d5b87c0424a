"""Turn what users pass to fit/evaluate/predict into a BatchStream."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, RandomSampler
from torch.utils.data import Dataset as TorchDataset

from mirrorfit.data.batches import BatchStream, IndexedBatches
from mirrorfit.data.sharding import Replica
from mirrorfit.data.sources import DatasetSource, Source, TensorSource


def as_batch_stream(x: Any, y: Any = None, sample_weight: Any = None, *, batch_size: int | None,
                    replica: Replica, shuffle: bool, seed: int,
                    drop_remainder: bool = False) -> BatchStream:
    """The stream of this replica's local batches for ``x`` (and ``y``).

    Raises:
        ValueError: ``y`` given with a dataset/loader, or lengths that differ.
    """
    stream_fn = getattr(x, "_as_batch_stream", None)  # mirrorfit.data.Dataset
    if stream_fn is not None:
        _no_y(x, y, batch_size, allow_batch_size=False)
        return stream_fn(replica=replica, shuffle=shuffle, seed=seed)
    if isinstance(x, DataLoader):
        _no_y(x, y, None)
        if x.batch_size is None:
            raise ValueError("A DataLoader with batch_size=None cannot be re-batched; give it a "
                             "batch_size (the global batch size).")
        source: Source = DatasetSource(x.dataset, x.collate_fn)
        loader_shuffle = isinstance(x.sampler, RandomSampler)
        return IndexedBatches(source, x.batch_size, replica, shuffle=shuffle and loader_shuffle,
                              seed=seed, drop_remainder=x.drop_last)
    if isinstance(x, TorchDataset):
        _no_y(x, y, None)
        source = DatasetSource(x)
    else:
        parts = [x] if y is None else [x, y]
        if sample_weight is not None:
            if y is None:
                raise ValueError("sample_weight needs y.")
            parts.append(sample_weight)
        source = TensorSource(parts)
    return IndexedBatches(source, batch_size or 32, replica, shuffle=shuffle, seed=seed,
                          drop_remainder=drop_remainder)


def _no_y(x: Any, y: Any, batch_size: int | None, allow_batch_size: bool = True) -> None:
    if y is not None:
        raise ValueError(
            f"y must be None when x is a {type(x).__name__} (it yields the targets itself); "
            f"received y of type {type(y).__name__}."
        )
    if not allow_batch_size and batch_size is not None:
        raise ValueError(
            f"batch_size must be None when x is a batched {type(x).__name__}; received "
            f"batch_size={batch_size}. Batch the dataset with .batch(global_batch) instead."
        )
