"""Strategies place modules and tensors and talk between replicas.

A strategy answers: how many replicas, which one am I, which device is mine,
how is a module wrapped for training, and how are values reduced, gathered and
broadcast. It never reads the cluster's variables itself (``cluster``
environments do) and never starts processes (the launcher does).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mirrorfit.data.sharding import Replica
from mirrorfit.strategies import context

T = TypeVar("T")

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class Strategy:
    """Base strategy: one replica in this process unless a process group is up.

    Subclasses set ``_rank``, ``_world``, ``_local_rank`` and ``_device`` and may
    override :meth:`setup_module`.
    """

    def __init__(self) -> None:
        self._rank = 0
        self._world = 1
        self._local_rank = 0
        self._device = torch.device("cpu")

    # --- who am I -----------------------------------------------------------------------
    @property
    def num_replicas_in_sync(self) -> int:
        """Replicas that compute each global batch together (Keras's name)."""
        return self._world

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def local_rank(self) -> int:
        return self._local_rank

    @property
    def is_chief(self) -> bool:
        """True on the replica that prints and writes files (rank 0)."""
        return self._rank == 0

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def replica(self) -> Replica:
        return Replica(self._rank, self._world)

    @property
    def distributed(self) -> bool:
        return self._world > 1 and dist.is_available() and dist.is_initialized()

    # --- scope --------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self) -> Iterator[Strategy]:
        """Models built or compiled inside are bound to this strategy."""
        context.push(self)
        try:
            yield self
        finally:
            context.pop()

    # --- modules ------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to this replica's device; return what to call in training."""
        return module.to(self._device)

    def no_sync(self, wrapped: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce inside (gradient accumulation)."""
        fn = getattr(wrapped, "no_sync", None)
        return fn() if fn is not None else contextlib.nullcontext()

    # --- your own loop (mirrorfit.strategies.distribute / .run) ----------------------------
    def distribute(self, module: nn.Module, optimizer: Any = None, *loaders: Any,
                   seed: int | None = None) -> tuple[Any, ...]:
        """``model, opt, loader = strategy.distribute(model, opt, loader)``: the module
        placed and wrapped, the optimizer as is, DataLoaders re-sharded for this replica
        (their ``batch_size`` is the global batch). See ``strategies.distribute``."""
        from mirrorfit.strategies.distribute import distribute

        return distribute(self, module, optimizer, *loaders, seed=seed)

    def scale_loss(self, loss: torch.Tensor, size: int | None = None,
                   global_size: int | None = None) -> torch.Tensor:
        """This replica's mean ``loss`` scaled so that the averaged update is the global
        mean (uneven and empty shares too); sizes default to the distributed loader's."""
        from mirrorfit.strategies.distribute import scale_loss

        return scale_loss(self, loss, size, global_size)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on every replica inside ``scope()``. From a notebook
        (a MirroredStrategy waiting for workers) it starts them and returns the chief's
        return value; in a worker, or with one replica, it calls ``fn`` here and returns
        its value. See ``strategies.run``."""
        from mirrorfit.strategies.run import run

        return run(self, fn, *args, **kwargs)

    # --- collectives --------------------------------------------------------------------
    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` in place across replicas ('sum', 'max', 'min') and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=_REDUCE_OPS[op])
        return tensor

    def reduce(self, value: float | torch.Tensor, op: str = "mean") -> float | torch.Tensor:
        """The global sum/mean/max/min of a per-replica number or tensor."""
        if op not in ("sum", "mean", "max", "min"):
            raise ValueError(f"op must be 'sum', 'mean', 'max' or 'min'; received {op!r}.")
        if not self.distributed:  # one replica: every op is the identity
            return value.detach().clone() if isinstance(value, torch.Tensor) else float(value)
        if isinstance(value, torch.Tensor):
            t = value.detach().clone()
        else:
            t = torch.tensor(float(value), dtype=torch.float64)
        t = self.all_reduce(t.to(self._comm_device()), "sum" if op == "mean" else op)
        if op == "mean":
            t = t / self._world
        return t if isinstance(value, torch.Tensor) else float(t.item())

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every replica's ``tensor`` along dim 0 in rank order (ragged OK)."""
        if not self.distributed:
            return tensor
        t = tensor.detach().to(self._comm_device())
        sizes = self.all_gather_object(int(t.shape[0]))
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(self._world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).to(tensor.device)

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self._world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def agree_seed(self, seed: int | None) -> int:
        """``seed``, or the chief's draw from Python's ``random``, shared with every
        replica: after :func:`mirrorfit.set_seed` every run draws the same seeds (and
        successive fits different ones); without it, each run its own. Every replica
        draws, so their ``random`` states stay alike."""
        if seed is None:
            seed = random.randrange(2**31)
            seed = int(self.broadcast_object(seed if self.is_chief else 0))
        return seed

    def _comm_device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_replicas_in_sync={self._world}, rank={self._rank}, "
                f"device={self._device})")
