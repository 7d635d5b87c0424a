"""Which samples a replica reads: the global order and each replica's share.

The order of samples is a pure function of ``(seed, epoch)`` and never of the
replica count, so training on 1, 2, 3 or 4 replicas at the same global batch
sees the same global batches. Each global batch is then split into contiguous
local shares, as even as possible (the first ``n % world`` replicas get one more).
A share may be empty (a last partial batch smaller than the replica count); the
trainer then takes part in the all-reduce with zero weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Replica:
    """This process's place among the replicas that share each global batch."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"Replica needs 0 <= rank < world, received rank={self.rank}, "
                             f"world={self.world}.")


def share_bounds(n: int, replica: Replica) -> tuple[int, int]:
    """Start and stop of ``replica``'s contiguous share of ``n`` items."""
    base, extra = divmod(n, replica.world)
    start = replica.rank * base + min(replica.rank, extra)
    return start, start + base + (1 if replica.rank < extra else 0)


def take_share(items: Any, n: int, replica: Replica) -> tuple[Any, int]:
    """``replica``'s part of a global batch of ``n`` ``items`` (indices or handles):
    ``(what to read, the share's size)``. An empty share still reads one dummy item,
    the batch's first, which the trainer weights by zero."""
    start, stop = share_bounds(n, replica)
    if stop == start:
        return items[:1], 0
    return (items if stop - start == n else items[start:stop]), stop - start


def loss_scale(size: int, global_size: int, replicas: int) -> float:
    """What a replica multiplies its mean loss over ``size`` samples by, so that the
    gradient averaged over ``replicas`` is the mean over all ``global_size`` samples:
    ``size * replicas / global_size`` (0 for an empty share)."""
    return size * replicas / global_size


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The order in which an epoch visits ``n`` samples (int64 indices)."""
    if not shuffle:
        return torch.arange(n, dtype=torch.int64)
    gen = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(n, generator=gen, dtype=torch.int64)


def num_batches(n: int, batch_size: int, drop_remainder: bool) -> int:
    """Global steps in an epoch of ``n`` samples."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def _mix(seed: int, epoch: int) -> int:
    # splitmix-style mixing so (seed, epoch) pairs do not collide for small values
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + 1) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF
