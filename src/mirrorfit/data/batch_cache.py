"""``batch(n).cache()``: this replica's shares of the first pass's global batches, kept.

tf.data's usual order caches *batches*. Under data parallelism each replica
builds its cache from its own shares only (it never reads another replica's
samples), so a cache of batches is per replica: ``BatchCache`` holds, for every
global batch ``b`` of the first pass, this replica's rows, their count and the
global batch's size. Stages after ``cache()`` (shuffle, take, skip, repeat, map,
prefetch) then move whole batches by their index ``b``, an order that depends on
(seed, epoch) only, so every replica count still sees the same global batches and
a resumed epoch jumps straight to its step.

A cache file of batches is therefore per replica too: ``replica_path`` names it
after the replica's place (``train.cache`` for one replica, ``train.cache.1-of-2``
for rank 1 of 2); another replica count builds (and keeps) its own files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mirrorfit.data.batches import LocalBatch
from mirrorfit.data.sequences import Chunk, RangeSeq, Seq
from mirrorfit.data.sharding import Replica
from mirrorfit.data.trees import concat, tree_map

__all__ = ["BatchCache", "replica_path"]


class BatchCache:
    """One replica's shares of a pass's global batches; handles are batch indices.

    Implements the ``Elements`` protocol for the stages after ``cache()``: the
    "element" behind handle ``b`` is this replica's share of global batch ``b``.

    Args:
        payload: what ``build`` returns (tensors only, so a cache file loads with
            ``weights_only=True``).
    """

    indexable = True
    label = "cached batch"

    def __init__(self, payload: dict[str, Any]) -> None:
        self.data = payload["data"]
        self.offsets: torch.Tensor = payload["offsets"]
        self.sizes: torch.Tensor = payload["sizes"]
        self.global_sizes: torch.Tensor = payload["global_sizes"]
        self.length = len(self.sizes)

    @staticmethod
    def build(batches: Iterable[LocalBatch]) -> dict[str, Any]:
        """The payload for ``batches`` (an empty share keeps its one dummy row)."""
        parts, rows, sizes, global_sizes = [], [0], [], []
        for batch in batches:
            parts.append(batch.data)
            rows.append(rows[-1] + _rows(batch.data))
            sizes.append(batch.size)
            global_sizes.append(batch.global_size)
        if not parts:
            raise ValueError("cache() received an empty dataset (0 batches); check the source "
                             "and any take()/skip() before cache().")
        return {"data": concat(parts), "offsets": torch.tensor(rows, dtype=torch.int64),
                "sizes": torch.tensor(sizes, dtype=torch.int64),
                "global_sizes": torch.tensor(global_sizes, dtype=torch.int64)}

    def seq(self) -> Seq:
        return RangeSeq(self.length)

    def batch(self, handles: Chunk) -> Any:
        lo, hi = (int(v) for v in self.offsets[self._index(handles):][:2])
        return tree_map(lambda t: t[lo:hi], self.data)  # views: no copy per step

    def samples(self, handles: Chunk) -> list[Any]:
        raise TypeError("The elements after batch().cache() are batches; map them with "
                        "map(fn), which receives this replica's share of a batch.")

    def positions(self, handles: Chunk) -> list[int]:
        return [self._index(handles)]

    def size(self, handles: Chunk) -> int:
        """Real samples in this replica's share of the batch (0: one dummy row)."""
        return int(self.sizes[self._index(handles)])

    def global_size(self, handles: Chunk) -> int:
        """Samples in the whole global batch."""
        return int(self.global_sizes[self._index(handles)])

    def describe(self) -> str:
        return f"cached_batches({self.length})"

    @staticmethod
    def _index(handles: Chunk) -> int:
        if isinstance(handles, torch.Tensor):
            return int(handles)
        return int(handles[0])


def replica_path(path: Path, replica: Replica) -> Path:
    """Where ``replica`` keeps its cache file of batches (``path`` itself for one replica)."""
    if replica.world == 1:
        return path
    return path.with_name(f"{path.name}.{replica.rank}-of-{replica.world}")


def _rows(data: Any) -> int:
    first = data
    while not isinstance(first, torch.Tensor):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return int(first.shape[0])
