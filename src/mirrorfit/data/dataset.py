"""``Dataset``: tf.data-style input pipelines on torch tensors, sharded for data-parallel fit.

Separation of concerns:
- ``Dataset`` (this module) records stages; it never reads data itself, and every
  method returns a new Dataset. ``mirrorfit.data.stages`` validates each stage.
- ``mirrorfit.data.sequences`` decides which elements an epoch visits and in what
  order (shuffle, take, skip, repeat, batch) on *handles*: int64 indices for
  sliced arrays and torch Datasets, so no sample is touched to reorder or skip.
- ``mirrorfit.data.elements`` turns handles into data: one vectorised
  ``index_select`` per tensor for slices; sample by sample for torch Datasets
  and generators. ``mirrorfit.data.plan`` moves maps to that fetch (maps are
  element-wise, so they commute with selection) and builds caches.
- ``mirrorfit.data.stream`` owns sharding: it cuts each global batch into this
  replica's share *before* fetching, so a replica reads and maps only its own
  samples. The order depends on (seed, epoch) only, never on the replica count.
- ``mirrorfit.data.prefetch`` owns threads: parallel maps and the background
  producer that overlaps the next batch with the current step.
- ``mirrorfit.data.cache`` owns fingerprints and cache files.
- The trainer owns the epoch and step counters and asks the stream for
  ``iter_epoch(epoch, start_step)``; a checkpoint of (epoch, step, seed) resumes exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset

from mirrorfit.data.elements import Elements, GeneratorElements, SliceElements, TorchElements
from mirrorfit.data.plan import compile_plan, describe
from mirrorfit.data.sequences import EpochKey
from mirrorfit.data.sharding import Replica
from mirrorfit.data.stages import (
    AUTOTUNE,
    UNKNOWN,
    Batch,
    Cache,
    Map,
    Prefetch,
    Repeat,
    Shuffle,
    Skip,
    Stage,
    Take,
)
from mirrorfit.data.stream import DatasetBatches, iter_batches, iter_samples

__all__ = ["Dataset"]


class Dataset:
    """A tf.data-style input pipeline on torch tensors.

    Build one with ``from_tensor_slices``, ``from_torch`` or ``from_generator``,
    chain stages, then pass it to ``Model.fit`` (batched with the *global* batch
    size: each replica reads only its share) or iterate it. Nothing runs until
    iteration.

    Each stage applies to whatever elements flow at its point, as in tf.data:
    ``map`` before ``batch`` sees one sample, after ``batch`` a batch (under
    ``fit``: this replica's share of the batch); ``shuffle``/``take``/``skip``/
    ``repeat`` after ``batch`` move whole batches. A tuple element is passed to
    a map function unpacked, ``fn(x, y)``; anything else as one argument.
    Iterating yields each element as a tuple, ``(x, y)`` or ``(x,)``.

    Example:
        >>> import torch
        >>> from mirrorfit.data import Dataset
        >>> x, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
        >>> ds = Dataset.from_tensor_slices((x, y)).shuffle(seed=0).batch(2).prefetch(2)
        >>> [len(yb) for xb, yb in ds]
        [2, 2, 1]
        >>> doubled = Dataset.from_tensor_slices((x, y)).map(lambda a, b: (2 * a, b)).batch(4)
        >>> next(iter(doubled))[0][1].tolist()
        [4.0, 6.0]
    """

    def __init__(self, elements: Elements, stages: tuple[Stage, ...] = ()) -> None:
        """Internal: use ``from_tensor_slices``, ``from_torch`` or ``from_generator``."""
        self._elements = elements
        self._stages = stages
        self._iterations = 0  # plain iterations so far: each one is a fresh epoch
        self._seed: int | None = None  # the plain iterations' seed, once a cache is built

    # -- constructors ---------------------------------------------------------------------

    @classmethod
    def from_tensor_slices(cls, tensors: Any) -> Dataset:
        """One element per row of ``tensors`` (arrays/tensors, or tuples/dicts of them).

        Raises:
            ValueError: arrays with different numbers of rows, or a scalar.
        """
        return cls(SliceElements(tensors))

    @classmethod
    def from_torch(cls, dataset: TorchDataset[Any]) -> Dataset:
        """The samples of a map-style ``torch.utils.data.Dataset`` (``dataset[i]``)."""
        return cls(TorchElements(dataset))

    @classmethod
    def from_generator(cls, fn: Callable[[], Iterable[Any]]) -> Dataset:
        """The samples of ``fn()``, called afresh for every pass.

        Only the samples of this replica's shares are mapped and batched, but every
        replica runs the generator (it cannot jump): ``cache()`` it when it is slow.
        """
        return cls(GeneratorElements(fn))

    # -- stages ---------------------------------------------------------------------------

    def shuffle(self, buffer_size: int | None = None, seed: int | None = None) -> Dataset:
        """Reshuffle every epoch: a full permutation (``None``) or a ``buffer_size`` buffer.

        With ``seed=None`` the order comes from the seed given to ``fit`` (or a fresh
        random seed per plain iteration).
        """
        return self._then(Shuffle(buffer_size, seed))

    def map(self, fn: Callable[..., Any], num_parallel_calls: int | None = None) -> Dataset:
        """Apply ``fn`` to each element at this point (a sample, or after ``batch`` a batch).

        ``num_parallel_calls`` threads fetch and map several batches at once
        (``AUTOTUNE``: one per CPU). Errors name the failing sample index.
        """
        return self._then(Map(fn, num_parallel_calls))

    def batch(self, global_batch: int, drop_remainder: bool = False) -> Dataset:
        """Group elements into batches of ``global_batch`` samples (across all replicas)."""
        if any(isinstance(s, Batch) for s in self._stages):
            raise ValueError(f"batch({global_batch}) on a dataset that is already batched "
                             f"({self!r}). Batch once, with the global batch size.")
        return self._then(Batch(global_batch, drop_remainder))

    def cache(self, path: str | os.PathLike[str] | None = None, *,
              on_mismatch: str = "error") -> Dataset:
        """Keep the elements so far after the first pass: in memory, or also in ``path``.

        A later run reuses ``path`` if the source and stages before ``cache()`` are
        unchanged; otherwise it raises ``CacheMismatchError`` (``on_mismatch="error"``)
        or rebuilds the file (``"rebuild"``). Put ``shuffle`` after ``cache``: a
        shuffle before it is frozen at its first order.

        After ``batch()`` (tf.data's usual ``.batch(n).cache()``) the cache keeps
        batches: the first pass's global batches, each replica keeping only its own
        share (a file per replica: ``path`` with ``.1-of-2`` appended for rank 1 of 2).
        A ``shuffle`` after it reorders whole batches.
        """
        return self._then(Cache(None if path is None else Path(path), on_mismatch))

    def prefetch(self, buffer_size: int = AUTOTUNE,
                 device: str | torch.device | None = None) -> Dataset:
        """Produce batches ``buffer_size`` ahead in a background thread.

        On CUDA, batches are pinned; with ``device``, also copied there asynchronously.
        Wherever it is placed, prefetch buffers the pipeline's final output.
        """
        return self._then(Prefetch(buffer_size, None if device is None else torch.device(device)))

    def take(self, count: int) -> Dataset:
        """The first ``count`` elements (batches, after ``batch``)."""
        return self._then(Take(count))

    def skip(self, count: int) -> Dataset:
        """All but the first ``count`` elements (batches, after ``batch``)."""
        return self._then(Skip(count))

    def repeat(self, count: int | None = None) -> Dataset:
        """``count`` passes (forever with ``None``); shuffles before it reshuffle per pass."""
        return self._then(Repeat(count))

    # -- inspection and iteration ----------------------------------------------------------

    def cardinality(self) -> int:
        """Elements per pass, or ``INFINITE`` (-1) or ``UNKNOWN`` (-2), as in tf.data."""
        n = getattr(self._elements, "length", UNKNOWN)
        for stage in self._stages:
            n = stage.out_length(n)
        return n

    def __len__(self) -> int:
        n = self.cardinality()
        if n < 0:
            raise TypeError(f"The length of {self!r} is {'infinite' if n == -1 else 'unknown'}; "
                            "use cardinality(), or give fit a steps_per_epoch.")
        return n

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        # shuffles given seed=None draw from torch's generator (torch.manual_seed repeats them)
        unseeded = any(isinstance(s, Shuffle) and s.seed is None for s in self._stages)
        seed = int(torch.randint(0, 2**62, ()).item()) if unseeded else 0
        if any(isinstance(s, Cache) for s in self._stages):
            # a cache is built at one seed: keep it, later shuffles still vary with the pass
            self._seed = seed if self._seed is None else self._seed
            seed = self._seed
        key = EpochKey(seed, self._iterations)
        self._iterations += 1
        plan = compile_plan(self._elements, self._stages, seed, Replica())
        if not plan.batched:
            return iter_samples(plan, key)
        return iter_batches(plan, key)

    def __repr__(self) -> str:
        return f"Dataset({describe(self._elements, self._stages)})"

    def _global_batch(self) -> int | None:
        """The size given to ``batch()``, or None for an unbatched pipeline."""
        return next((s.size for s in self._stages if isinstance(s, Batch)), None)

    def _then(self, stage: Stage) -> Dataset:
        stage.out_length(self.cardinality())  # raises early, e.g. shuffle of an infinite set
        return Dataset(self._elements, (*self._stages, stage))

    def _as_batch_stream(self, *, replica: Replica, shuffle: bool, seed: int) -> DatasetBatches:
        """The trainer's ``BatchStream`` for this replica (``data.adapters.as_batch_stream``).

        ``shuffle`` is ignored, as Keras ignores it for datasets: the Dataset's own
        ``shuffle`` stages decide the order; ``seed`` seeds those given ``seed=None``.
        """
        del shuffle
        return DatasetBatches(self._elements, self._stages, replica, seed)
