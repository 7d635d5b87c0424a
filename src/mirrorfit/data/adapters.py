"""Turn what users pass to fit/evaluate/predict into a BatchStream."""

from __future__ import annotations

from typing import Any

from torch.utils.data import (
    DataLoader,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
)
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
        _no_y(x, y)
        if batch_size is not None:
            raise ValueError(_dataset_batch_size_message(x, batch_size))
        return stream_fn(replica=replica, shuffle=shuffle, seed=seed)
    if isinstance(x, DataLoader):
        _no_y(x, y)
        if x.batch_size is None:
            raise ValueError("A DataLoader with batch_size=None cannot be re-batched; give it a "
                             "batch_size (the global batch size).")
        dataset, loader_shuffle = _loader_dataset(x)
        source: Source = DatasetSource(dataset, x.collate_fn)
        return IndexedBatches(source, x.batch_size, replica, shuffle=shuffle and loader_shuffle,
                              seed=seed, drop_remainder=x.drop_last)
    if isinstance(x, TorchDataset):
        _no_y(x, y)
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


def _loader_dataset(loader: DataLoader) -> tuple[TorchDataset, bool]:
    """The samples a DataLoader's sampler visits, and whether it shuffles them.

    mirrorfit re-batches the loader's dataset per replica, so only samplers whose
    meaning survives that are accepted: sequential, random without replacement,
    and SubsetRandomSampler (a train/validation split).

    Raises:
        ValueError: any other sampler (weighted, with replacement, custom).
    """
    sampler = loader.sampler
    if isinstance(sampler, SequentialSampler):
        return loader.dataset, False
    if isinstance(sampler, RandomSampler) and not sampler.replacement and (
            sampler.num_samples == len(sampler.data_source)):
        return loader.dataset, True
    if isinstance(sampler, SubsetRandomSampler):
        return Subset(loader.dataset, list(sampler.indices)), True
    raise ValueError(
        f"The DataLoader's sampler ({type(sampler).__name__}) decides which samples an epoch "
        "visits, and mirrorfit re-shards the loader's dataset itself. Pass a Subset of the "
        "dataset (or a mirrorfit.data.Dataset) instead, with shuffle=True or a plain loader."
    )


def _no_y(x: Any, y: Any) -> None:
    if y is not None:
        raise ValueError(
            f"y must be None when x is a {type(x).__name__} (it yields the targets itself); "
            f"received y of type {type(y).__name__}."
        )


def _dataset_batch_size_message(ds: Any, batch_size: int) -> str:
    """What to say when ``fit(dataset, batch_size=...)`` gets a ``mirrorfit.data.Dataset``."""
    batched = ds._global_batch()
    if batched is None:
        return (f"batch_size={batch_size} was given with an unbatched Dataset ({ds!r}): a "
                f"Dataset is batched by its own stages. Add .batch({batch_size}) to the pipeline "
                "(the global batch: samples per step across all replicas) and call fit without "
                "batch_size.")
    return (f"batch_size must be None when x is a Dataset batched by .batch({batched}) "
            f"({ds!r}); received batch_size={batch_size}. Change the .batch() of the pipeline "
            "instead.")
