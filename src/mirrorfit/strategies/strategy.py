"""Strategies place modules and tensors, run the step, and talk between replicas.

A strategy is the one owner of how training is distributed. It answers: how many
replicas share each global batch and which share is mine (the *data-parallel
coordinate*, apart from the global rank), which device is mine, how a module and its
optimizer are set up for training (:meth:`Strategy.setup`), how a step's forward,
backward and optimizer update run (through a precision policy), how values are
reduced, gathered and broadcast, and how the training state is saved and loaded
(one file when the state is replicated; ``torch.distributed.checkpoint`` when a
strategy has :class:`~mirrorfit.strategies.capabilities.ShardedState`). Optional
capabilities are explicit interfaces (``strategies.capabilities``). A strategy never
reads the cluster's variables itself (``cluster`` environments do) and never starts
processes (the launcher does).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from mirrorfit import optimizers as optimizers_mod
from mirrorfit import precision as precision_mod
from mirrorfit.checkpoint.io import load_checkpoint
from mirrorfit.checkpoint.writer import CheckpointWriter
from mirrorfit.data.sharding import Replica
from mirrorfit.strategies import context, step_function
from mirrorfit.strategies.capabilities import BackwardSyncControl, ShardedState
from mirrorfit.strategies.setup import Clipping, Setup, StepInputs

T = TypeVar("T")

_REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


class Strategy:
    """Base strategy: one replica in this process unless a process group is up.

    Subclasses set ``_rank``, ``_world``, ``_local_rank`` and ``_device`` (and, when
    not every rank is a data-parallel replica, the data-parallel coordinate
    ``_dp_rank``/``_dp_world`` and ``dp_group``) and may override :meth:`setup_module`,
    the step methods and the state methods.

    Args:
        precision: Lightning's names (``"bf16-mixed"``, ``"16-mixed"``, ``"32"``) or
            Keras's (``"mixed_bfloat16"``, ...); None follows
            ``mirrorfit.mixed_precision.global_policy()`` at compile.
    """

    def __init__(self, precision: str | None = None) -> None:
        self._rank = 0
        self._world = 1
        self._local_rank = 0
        self._device = torch.device("cpu")
        self._dp_rank: int | None = None  # None: the global rank and world
        self._dp_world: int | None = None
        self.dp_group: Any = None  # the process group of data-parallel reductions (None: all)
        self.precision_policy = (precision_mod.canonical_name(precision)
                                 if precision is not None else None)

    # --- who am I -----------------------------------------------------------------------
    @property
    def num_replicas_in_sync(self) -> int:
        """Data-parallel replicas that share each global batch (Keras's name)."""
        return self._world if self._dp_world is None else self._dp_world

    @property
    def rank(self) -> int:
        """The global rank (every process of the job has its own)."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Processes in the job (replicas times the ranks that make up one replica)."""
        return self._world

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
        """The data-parallel coordinate: which share of each global batch this rank reads."""
        if self._dp_world is None:
            return Replica(self._rank, self._world)
        return Replica(self._dp_rank or 0, self._dp_world)

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

    def setup(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
              precision: str = "float32", clipping: Clipping | None = None,
              jit_compile: bool = False) -> Setup:
        """Set ``module`` up for training and point ``optimizer`` at its parameters as
        the strategy left them (rebuilt in place where they were replaced).

        torch.compile comes last, around what the strategy wrapped (the order torch
        documents for DDP).
        """
        before = {id(p): name for name, p in module.named_parameters()}
        policy = self.precision_policy or precision
        placed = self.setup_module(module)
        optimizers_mod.rebind(optimizer, before, dict(module.named_parameters()))
        setup = Setup(module, placed, placed, optimizer,
                      precision_mod.resolve(policy, self._device), clipping or Clipping(),
                      jit_compile)
        if jit_compile:
            setup.compile()
        return setup

    # --- one step (the trainer calls train_function; a pipeline strategy overrides the rest)
    def train_function(self, setup: Setup, call: step_function.Call,
                       loss: step_function.LossCall) -> step_function.TrainStep:
        """One training step, ``(x, y, sample_weight, scale, update) -> (loss, y_pred)``:
        :meth:`forward_backward`, then :meth:`optimizer_step` on an update. Built once per
        model; where this class's step methods, the float32 policy and no clipping leave
        nothing to do but torch's own calls, the step runs them in one frame
        (``strategies.step_function``)."""
        cls = type(self)
        if (cls.forward_backward is Strategy.forward_backward
                and cls.optimizer_step is Strategy.optimizer_step
                and not isinstance(self, BackwardSyncControl)
                and precision_mod.passthrough(setup.precision) and not setup.clipping.active):
            return step_function.plain_step(setup, call, loss)
        return step_function.general_step(self, setup, call, loss)

    def forward_backward(self, setup: Setup, inputs: StepInputs,
                         scale: float) -> tuple[torch.Tensor | None, Any]:
        """Forward and loss under the precision policy, backward of ``loss * scale``.

        Returns:
            The detached loss (this share's mean) and the output, which may still require
            grad (the trainer detaches it where metrics read it: a detach per step costs
            about 1% of a small model's step); None for both on a rank that does not
            compute the output (a pipeline's earlier stages).
        """
        precision = setup.precision
        with precision.forward_context():
            y_pred = inputs.call(setup.wrapped, inputs.x)
            loss = inputs.loss(y_pred, inputs.y, inputs.sw)
        precision.backward(loss if scale == 1.0 else loss * scale)  # 1.0: one replica, whole batch
        return loss.detach(), y_pred

    def forward(self, setup: Setup, inputs: StepInputs) -> tuple[torch.Tensor | None, Any]:
        """Evaluation's forward (no gradients): loss (None without targets) and output."""
        with setup.precision.forward_context():
            y_pred = inputs.call(setup.evaluator, inputs.x)
            loss = None if inputs.y is None else inputs.loss(y_pred, inputs.y, inputs.sw)
        return loss, y_pred

    def optimizer_step(self, setup: Setup) -> bool:
        """Clip, step and zero the gradients; False when the precision policy skipped
        the step (inf/NaN gradients under float16), on every replica alike."""
        optimizer, precision = setup.optimizer, setup.precision
        if setup.clipping.active:
            precision.unscale_gradients(optimizer)
            self.clip_gradients(setup)
        stepped = precision.step(optimizer, self.agree_found_inf)
        optimizer.zero_grad(set_to_none=True)
        return stepped

    def clip_gradients(self, setup: Setup) -> None:
        """Keras's clipping on the global gradient. With replicated gradients (after the
        all-reduce) each rank computes the same norms; sharded parameters (DTensors)
        reduce their norms inside torch's ``clip_grad_norm_``."""
        clip = setup.clipping
        grads = [p for g in setup.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        if clip.clipnorm is not None:
            for p in grads:
                nn.utils.clip_grad_norm_([p], clip.clipnorm, foreach=True)
        elif clip.global_clipnorm is not None:
            nn.utils.clip_grad_norm_(grads, clip.global_clipnorm, foreach=True)
        if clip.clipvalue is not None:
            nn.utils.clip_grad_value_(grads, clip.clipvalue, foreach=True)

    def agree_found_inf(self, flag: torch.Tensor) -> None:
        """Make an inf/NaN flag the same on every rank (in place). Replicated gradients
        are already equal after the all-reduce, so this base does nothing; strategies
        whose ranks hold different gradients reduce it (MAX)."""

    # --- training state (checkpoints) ----------------------------------------------------
    def module_state(self, setup: Setup) -> dict[str, Any]:
        """The module's part of a checkpoint (replicated: the whole state dict)."""
        return setup.module.state_dict()

    def optimizer_state(self, setup: Setup) -> dict[str, Any]:
        return setup.optimizer.state_dict()

    def load_module_state(self, setup: Setup, state: dict[str, Any]) -> None:
        setup.module.load_state_dict(state)

    def load_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        setup.optimizer.load_state_dict(state)

    def full_optimizer_state(self, setup: Setup) -> dict[str, Any]:
        """The optimizer state with whole tensors (a consolidated model file)."""
        return self.optimizer_state(setup)

    def load_full_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        self.load_optimizer_state(setup, state)

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The whole module's parameters and buffers on every rank (``get_weights``)."""
        return module.state_dict()

    def load_full_state_dict(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load whole tensors (``set_weights``, a consolidated file) into ``module``."""
        module.load_state_dict(state)

    @property
    def writes_checkpoint(self) -> bool:
        """True on the ranks that hold part of a checkpoint (the chief when replicated)."""
        return isinstance(self, ShardedState) or self.is_chief

    def save_checkpoint(self, content: dict[str, Any], path: str | os.PathLike[str], kind: str,
                        writer: CheckpointWriter, then: Callable[[], None] | None = None) -> None:
        """Collective: write a checkpoint of ``kind`` (one file by the chief when the state
        is replicated; a DCP folder written by every rank when it is sharded). Every rank
        leaves together."""
        if isinstance(self, ShardedState):
            writer.wait()
            self.save_sharded(content, path, kind)
            if then is not None and self.is_chief:
                then()
        elif self.is_chief:
            writer.save(content, path, kind, then=then)
        self.barrier()

    def load_checkpoint(self, path: str | os.PathLike[str], kinds: Collection[str],
                        template: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every rank reads the checkpoint at ``path`` onto its own device."""
        if isinstance(self, ShardedState) and template is not None:
            return self.load_sharded(template, path, kinds)
        return load_checkpoint(path, kinds, map_location=self._device)

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
    def all_reduce(self, tensor: torch.Tensor, op: str = "sum", group: Any = None) -> torch.Tensor:
        """Reduce ``tensor`` in place across every rank of ``group`` (default: all) with
        'sum', 'max' or 'min', and return it."""
        if self.distributed:
            dist.all_reduce(tensor, op=_REDUCE_OPS[op], group=group)
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
        """``seed``, or the chief's draw from torch's default generator, shared with every
        replica: after ``torch.manual_seed(0)`` or :func:`mirrorfit.set_seed` every run
        draws the same seeds (and successive fits different ones), as a ``DataLoader(
        shuffle=True)`` does; without a seed, each run its own. Every replica draws, so
        their generators stay alike."""
        if seed is None:
            seed = int(torch.randint(2**31 - 1, (), dtype=torch.int64).item())
            seed = int(self.broadcast_object(seed if self.is_chief else 0))
        return seed

    def _comm_device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_replicas_in_sync={self._world}, rank={self._rank}, "
                f"device={self._device})")
