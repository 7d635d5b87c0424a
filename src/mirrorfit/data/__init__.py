"""Input data: sources, global-batch sharding, and (``Dataset``) tf.data-style pipelines."""

from __future__ import annotations

from mirrorfit.data.batches import BatchStream, IndexedBatches, LocalBatch
from mirrorfit.data.sharding import Replica

__all__ = ["BatchStream", "IndexedBatches", "LocalBatch", "Replica"]
