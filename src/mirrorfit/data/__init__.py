"""Input data: sources, global-batch sharding, and (``Dataset``) tf.data-style pipelines."""

from __future__ import annotations

from mirrorfit.data.batches import BatchStream, IndexedBatches, LocalBatch
from mirrorfit.data.cache import CacheMismatchError
from mirrorfit.data.dataset import Dataset
from mirrorfit.data.plan import MapFunctionError
from mirrorfit.data.sharding import Replica
from mirrorfit.data.stages import AUTOTUNE, INFINITE, UNKNOWN

__all__ = ["BatchStream", "IndexedBatches", "LocalBatch", "Replica"]
__all__ += ["AUTOTUNE", "INFINITE", "UNKNOWN", "CacheMismatchError", "Dataset", "MapFunctionError"]
