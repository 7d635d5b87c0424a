"""Small builders shared by the Dataset tests."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from mirrorfit.data import Dataset, LocalBatch, Replica


def ids(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x[i] = [i, -i]`` and ``y[i] = i``: every value names its sample."""
    y = torch.arange(n)
    return torch.stack([y, -y], 1).float(), y


def epoch(ds: Dataset, epoch: int = 0, *, rank: int = 0, world: int = 1, seed: int = 0,
          start: int = 0) -> list[LocalBatch]:
    stream = ds._as_batch_stream(replica=Replica(rank, world), shuffle=True, seed=seed)
    return list(stream.iter_epoch(epoch, start))


def ys(batches: list[LocalBatch]) -> list[list[int]]:
    """The ``y`` values of each local batch (the real samples only)."""
    return [b.data[1][:b.size].tolist() for b in batches]


class Counting(TorchDataset[Any]):
    """A map-style dataset that counts reads."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return torch.tensor([float(i), -float(i)]), i
