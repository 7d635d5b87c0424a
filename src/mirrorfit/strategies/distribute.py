"""The torch-native face: keep your own loop, let the strategy place and shard.

    model, opt, train_loader, test_loader = strategy.distribute(
        model, opt, train_loader, test_loader)
    for epoch in range(epochs):
        for x, y in train_loader:             # this replica's share of each global batch
            loss = F.cross_entropy(model(x), y)
            strategy.scale_loss(loss).backward()  # the update is the global mean
            opt.step(); opt.zero_grad()

Separation of concerns: the *loader* decides the global batches (order from the
seed and the epoch only, never the replica count) and hands each replica its
contiguous share; the *strategy* wraps the module (DDP) and scales the loss.

- A DataLoader's ``batch_size`` is the **global** batch. No sample is repeated to
  pad: when a global batch does not divide evenly, shares differ by one; when it
  has fewer samples than replicas, some shares are **empty** (a batch of 0 rows).
  Every replica sees the same number of batches, so no replica waits forever.
- ``scale_loss(loss)`` multiplies the replica's mean loss by ``n * world / N``
  (``n`` its share, ``N`` the global batch) so DDP's average is the global mean;
  on an empty share it returns a zero that still reaches every parameter.
- The epoch advances each time the loader is iterated (``set_epoch`` is done for
  you; call it yourself to jump to an epoch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from mirrorfit.data.sharding import Replica, epoch_order, loss_scale, num_batches, take_share


class Placing(Protocol):
    """What this module needs of a strategy (``mirrorfit.strategies.Strategy`` has it)."""

    @property
    def replica(self) -> Replica: ...
    @property
    def num_replicas_in_sync(self) -> int: ...
    def setup_module(self, module: nn.Module) -> nn.Module: ...
    def agree_seed(self, seed: int | None) -> int: ...


@dataclass(frozen=True)
class Share:
    """This replica's part of the current global batch: ``size`` of ``global_size``."""

    size: int
    global_size: int


_current: list[Share | None] = [None]


class ShareBatchSampler(Sampler[list[int]]):
    """Yields this replica's dataset indices of each global batch of an epoch.

    An empty share yields the first index of the global batch (so collation
    works); :class:`DistributedLoader` then cuts the batch to 0 rows.
    """

    def __init__(self, num_samples: int, batch_size: int, replica: Replica, *,
                 shuffle: bool, seed: int, drop_last: bool) -> None:
        self.num_samples, self.batch_size, self.replica = num_samples, batch_size, replica
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return num_batches(self.num_samples, self.batch_size, self.drop_last)

    def shares(self) -> list[tuple[list[int], Share]]:
        """(indices to load, share) for every global batch of the current epoch."""
        order = epoch_order(self.num_samples, seed=self.seed, epoch=self.epoch,
                            shuffle=self.shuffle)
        out = []
        for step in range(len(self)):
            global_idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            read, size = take_share(global_idx, len(global_idx), self.replica)
            out.append((read.tolist(), Share(size, len(global_idx))))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for indices, _ in self.shares():
            yield indices


class DistributedLoader:
    """A DataLoader re-sharded for one replica (see the module docstring).

    Keeps the loader's dataset, ``collate_fn``, workers and pinning; replaces its
    sampler. Shuffles when the original did (a ``RandomSampler``), with the order
    drawn from ``seed`` and the epoch.

    Example:
        >>> import torch, mirrorfit
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
        >>> strategy = mirrorfit.OneDeviceStrategy("cpu")
        >>> _, _, loader = strategy.distribute(torch.nn.Linear(1, 1), None,
        ...                                    DataLoader(data, batch_size=4), seed=0)
        >>> [len(y) for _, y in loader], loader.share
        ([4, 4, 2], Share(size=2, global_size=2))
    """

    def __init__(self, loader: DataLoader, replica: Replica, seed: int) -> None:
        _check_loader(loader)
        assert loader.batch_size is not None
        self.sampler = ShareBatchSampler(
            len(loader.dataset), loader.batch_size, replica,  # type: ignore[arg-type]
            shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
            drop_last=loader.drop_last)
        workers = loader.num_workers
        self.loader = DataLoader(
            loader.dataset, batch_sampler=self.sampler, num_workers=workers,
            collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn, generator=loader.generator,
            multiprocessing_context=loader.multiprocessing_context if workers else None,
            prefetch_factor=loader.prefetch_factor if workers else None,
            persistent_workers=loader.persistent_workers if workers else False,
            pin_memory_device=loader.pin_memory_device)
        self.share: Share | None = None
        self._next_epoch = 0

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    @property
    def batch_size(self) -> int:
        """The global batch size."""
        return self.sampler.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration read ``epoch`` (iteration advances it by itself)."""
        self._next_epoch = epoch

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_epoch(self._next_epoch)
        self._next_epoch += 1
        shares = [share for _, share in self.sampler.shares()]
        for batch, share in zip(self.loader, shares, strict=True):
            self.share = _current[0] = share
            yield batch if share.size else _no_rows(batch)


def distribute(strategy: Placing, module: nn.Module, optimizer: Any = None,
               *loaders: DataLoader, seed: int | None = None) -> tuple[Any, ...]:
    """``(wrapped module, optimizer, *re-sharded loaders)`` for a hand-written loop.

    Args:
        module: moved to this replica's device and wrapped for data parallelism.
        optimizer: returned unchanged (parameters are moved in place, so it stays valid).
        loaders: DataLoaders whose ``batch_size`` is the global batch.
        seed: the shuffling seed (every replica must pass the same); None draws one
            on the chief and shares it.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"distribute() takes a torch.nn.Module first; received "
                        f"{type(module).__name__}.")
    wrapped = strategy.setup_module(module)
    seed = strategy.agree_seed(seed)
    return (wrapped, optimizer,
            *(DistributedLoader(ld, strategy.replica, seed) for ld in loaders))


def scale_loss(strategy: Placing, loss: torch.Tensor, size: int | None = None,
               global_size: int | None = None) -> torch.Tensor:
    """``loss`` (this replica's mean) scaled so that DDP's average is the global mean.

    ``size``/``global_size`` default to the share of the batch last yielded by a
    loader from ``strategy.distribute``.

    Raises:
        ValueError: no share is known, or the sizes are impossible.
    """
    if size is None or global_size is None:
        share = _current[0]
        if share is None:
            raise ValueError(
                "scale_loss() does not know this replica's share: iterate a loader returned by "
                "strategy.distribute(...), or pass size= (samples here) and global_size= "
                "(samples in the global batch).")
        size, global_size = share.size, share.global_size
    if global_size < 1 or not 0 <= size <= global_size:
        raise ValueError(f"scale_loss needs 0 <= size <= global_size and global_size >= 1; "
                         f"received size={size}, global_size={global_size}.")
    if size == 0:  # an empty share: the mean of nothing is NaN; keep the graph, weigh 0
        return torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
    return loss * loss_scale(size, global_size, strategy.num_replicas_in_sync)


def _check_loader(loader: Any) -> None:
    if not isinstance(loader, DataLoader):
        raise TypeError(f"distribute() re-shards torch DataLoaders; received "
                        f"{type(loader).__name__}.")
    if isinstance(loader.dataset, IterableDataset):
        raise ValueError("distribute() needs a map-style dataset (with __len__ and "
                         "__getitem__) to shard by index; received an IterableDataset. Shard "
                         "it yourself with strategy.rank / strategy.num_replicas_in_sync.")
    if loader.batch_size is None:
        raise ValueError("distribute() needs DataLoader(batch_size=global_batch); received a "
                         "loader with batch_size=None (a custom batch_sampler).")
    if not isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        raise ValueError(
            f"distribute() replaces the loader's sampler, and {type(loader.sampler).__name__} "
            "would be lost. Use shuffle=True or False; the order then comes from the seed.")


def _no_rows(batch: Any) -> Any:
    """``batch`` cut to 0 samples, keeping its structure (tensors, tuples, dicts)."""
    if isinstance(batch, torch.Tensor):
        return batch[:0]
    if isinstance(batch, Mapping):
        return type(batch)({k: _no_rows(v) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        if batch and all(isinstance(v, (torch.Tensor, Mapping, tuple, list)) for v in batch):
            return type(batch)(_no_rows(v) for v in batch)  # type: ignore[call-arg]
        return type(batch)()  # a list of per-sample values
    return batch
