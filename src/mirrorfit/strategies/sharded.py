"""Sharded data parallelism on FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each replica keeps ``1/N`` of every parameter, of its gradient and of the optimizer
state. A forward or backward pass all-gathers one wrapped block's parameters at a
time and frees them again; gradients are reduce-scattered so that each replica
updates its own shard. The data-parallel arithmetic is MirroredStrategy's (each
replica reads its share of the global batch, the loss is scaled to the global mean),
so the final weights match one device's.

Checkpoints go through ``torch.distributed.checkpoint``: every rank writes its shards
into one folder (``checkpoint.sharded``), which loads on another replica count too.
``get_weights``, ``model.save`` and ``save_weights`` gather whole tensors, so a
consolidated file loads with :func:`mirrorfit.load_model` on one device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from mirrorfit import precision as precision_mod
from mirrorfit.checkpoint import sharded as sharded_io
from mirrorfit.checkpoint.errors import MismatchedCheckpointError
from mirrorfit.devices import DeviceSpec
from mirrorfit.strategies.capabilities import BackwardSyncControl, ShardedState
from mirrorfit.strategies.setup import Clipping, Setup
from mirrorfit.strategies.shardable import check_shardable
from mirrorfit.strategies.workers import WorkerStrategy

#: what ``wrap=`` accepts: module paths ("encoder.layers.0") or module classes
WrapSpec = Sequence[str | type[nn.Module]] | str | type[nn.Module] | None

_FULL = StateDictOptions(full_state_dict=True)


class ShardedStrategy(WorkerStrategy, BackwardSyncControl, ShardedState):
    """Parameters, gradients and optimizer state sharded across replicas (FSDP2).

    Started like :class:`~mirrorfit.MirroredStrategy` (``python train.py`` with
    ``devices=2`` starts two workers; torchrun, SLURM and ``mirrorfit run`` are joined),
    on a one-axis ``DeviceMesh`` (gloo on CPU, NCCL on CUDA). With one replica nothing
    is sharded (the module trains as on one device) but checkpoints are still folders,
    so a run can move between replica counts.

    Args:
        devices: None (all GPUs, else one CPU), a count, or a list such as
            ``["cuda:0", "cuda:1"]``. On a CPU-only host ``devices=2`` means 2 workers.
        reshard_after_forward: free each block's gathered parameters after its forward
            pass (less memory, one more all-gather in backward), as FSDP's option.
        wrap: what becomes its own FSDP unit before the root: None (each child of the
            root that holds parameters; the items of a ``ModuleList``/``ModuleDict``
            child), module paths (``"encoder.layers.0"``) and/or module classes (every
            submodule of that class).
        port, timeout, num_threads, max_restarts: as for ``MirroredStrategy``.
        precision: ``"bf16-mixed"``, ``"16-mixed"`` or ``"32"`` (Keras's names too); None
            follows ``mirrorfit.mixed_precision.global_policy()``. A mixed policy gathers
            parameters in the compute type and reduces gradients in float32 (FSDP2's
            ``MixedPrecisionPolicy``); the shards and the optimizer stay float32.

    Raises:
        ValueError: a ``wrap`` entry that is neither a path nor a module class (at
            construction), or a path or class the module does not have (at ``compile``,
            on every worker, before anything is sharded).
        ValueError, TypeError: at ``compile``, on every worker before anything is
            sharded, a module FSDP2 cannot shard: already FSDP-wrapped, lazy and not yet
            run, a 0-d parameter, a sparse embedding, weights tied across units, or
            trainable parameters of several dtypes in one unit
            (``strategies.shardable``; the message names the module and the fix).

    Example:
        >>> import mirrorfit
        >>> strategy = mirrorfit.ShardedStrategy(devices=2)   # doctest: +SKIP
        >>> with strategy.scope():                             # doctest: +SKIP
        ...     model = mirrorfit.Model(module)
        ...     model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> model.fit(x, y, batch_size=64, epochs=2)           # doctest: +SKIP
    """

    def __init__(self, devices: DeviceSpec = None, *, reshard_after_forward: bool = True,
                 wrap: WrapSpec = None, port: int | None = None, timeout: float | None = None,
                 num_threads: int | None = None, max_restarts: int = 0,
                 precision: str | None = None) -> None:
        self.reshard_after_forward = bool(reshard_after_forward)
        self.wrap = _check_wrap(wrap)
        self._mesh: DeviceMesh | None = None
        self._compute_dtype: torch.dtype | None = None  # set by setup() for setup_module()
        super().__init__(devices, port=port, timeout=timeout, num_threads=num_threads,
                         max_restarts=max_restarts, precision=precision)

    # --- modules ------------------------------------------------------------------------
    @property
    def mesh(self) -> DeviceMesh:
        """The one-axis device mesh of the replicas (built on first use)."""
        if self._mesh is None:
            self._mesh = init_device_mesh(self._device.type, (self._world,),
                                          mesh_dim_names=("dp",))
        return self._mesh

    def setup(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
              precision: str = "float32", clipping: Clipping | None = None,
              jit_compile: bool = False) -> Setup:
        """Shard ``module`` in place (see the class docstring) and rebind ``optimizer`` to
        the sharded parameters; the mixed-precision policy follows ``precision``."""
        name = precision_mod.canonical_name(self.precision_policy or precision)
        self._compute_dtype = precision_mod.POLICIES[name]
        return super().setup(module, optimizer, precision=precision, clipping=clipping,
                             jit_compile=jit_compile)

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Shard ``module`` in place: each unit of ``wrap``, then the root.

        Raises:
            ValueError, TypeError: a ``wrap`` entry the module does not have, or a module
                FSDP2 cannot shard (see ``strategies.shardable``), on every worker before
                anything is moved or sharded.
        """
        self._check_started()
        if not self.distributed or isinstance(module, FSDPModule):
            return module.to(self._device)  # one replica: nothing to shard; compiled twice
        units = _units(module, self.wrap)
        check_shardable(module, units)
        module = module.to(self._device)
        dtype = self._compute_dtype
        policy = (MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
                  if dtype is not None else MixedPrecisionPolicy())
        for child in units:
            fully_shard(child, mesh=self.mesh, reshard_after_forward=self.reshard_after_forward,
                        mp_policy=policy)
        # the root's own parameters are gathered again at once by backward: keep them
        fully_shard(module, mesh=self.mesh, reshard_after_forward=False, mp_policy=policy)
        return module

    def no_backward_sync(self, setup: Setup,
                         enabled: bool) -> contextlib.AbstractContextManager[Any]:
        """While accumulating, FSDP2 keeps the unsharded gradients (no reduce-scatter)
        until the update's backward pass."""
        if enabled and isinstance(setup.module, FSDPModule):
            return _no_gradient_sync(setup.module)
        return contextlib.nullcontext()

    def agree_found_inf(self, flag: torch.Tensor) -> None:
        """Each rank checks only its gradient shards for inf/NaN: take the maximum."""
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)

    # --- training state ------------------------------------------------------------------
    def module_state(self, setup: Setup) -> dict[str, Any]:
        """This rank's shards (DTensors), keyed by parameter name."""
        return get_model_state_dict(setup.module)

    def optimizer_state(self, setup: Setup) -> dict[str, Any]:
        """The optimizer's shards keyed by parameter name (an optimizer that never
        stepped gets zero state first, so that a checkpoint can load into it)."""
        return get_optimizer_state_dict(setup.module, setup.optimizer)

    def load_module_state(self, setup: Setup, state: dict[str, Any]) -> None:
        set_model_state_dict(setup.module, state, options=_options_for(state))

    def load_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        if not _is_sharded(setup.module):
            setup.optimizer.load_state_dict(state)  # keyed by name or index: both load
            return
        named = _named_optimizer_state(setup, state)
        set_optimizer_state_dict(setup.module, setup.optimizer, named,
                                 options=_options_for(named["state"]))

    def full_optimizer_state(self, setup: Setup) -> dict[str, Any]:
        """Whole tensors on every rank, keyed by index like ``optimizer.state_dict()``
        (so a consolidated file loads into an optimizer on one device)."""
        if not _is_sharded(setup.module):
            return setup.optimizer.state_dict()
        named = get_optimizer_state_dict(setup.module, setup.optimizer, options=_FULL)
        return _indexed(named)

    def load_full_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        self.load_optimizer_state(setup, state)

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Whole tensors on every rank (collective where ``module`` is sharded)."""
        if not _is_sharded(module):
            return module.state_dict()
        full: dict[str, Any] = get_model_state_dict(module, options=_FULL)
        return full  # whole tensors (full_state_dict=True)

    def load_full_state_dict(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if not _is_sharded(module):
            module.load_state_dict(state)
            return
        set_model_state_dict(module, dict[str, Any](state), options=_FULL)

    def save_sharded(self, state: dict[str, Any], path: str | os.PathLike[str],
                     kind: str = "backup") -> None:
        sharded_io.save(state, path, kind)

    def load_sharded(self, template: dict[str, Any], path: str | os.PathLike[str],
                     kinds: Collection[str] = ("backup",)) -> dict[str, Any]:
        sharded, _ = sharded_io.split(template)
        expected = sharded.get("module", {})
        source = repr(str(path))
        return sharded_io.load(template, path, kinds, self._device,
                               lambda saved: _check_shapes(expected, saved, source))

    def __repr__(self) -> str:
        return (f"ShardedStrategy(num_replicas_in_sync={self._world}, rank={self._rank}, "
                f"device={self._device}, reshard_after_forward={self.reshard_after_forward})")


# --- helpers ------------------------------------------------------------------------------
def _check_wrap(wrap: WrapSpec) -> tuple[str | type[nn.Module], ...] | None:
    if wrap is None:
        return None
    items = (wrap,) if isinstance(wrap, (str, type)) else tuple(wrap)
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise ValueError(f"wrap entries must be module paths (str) or nn.Module classes; "
                             f"received {item!r}. Example: wrap=['encoder', nn.TransformerEncoder"
                             "Layer].")
    return items


def _units(root: nn.Module, wrap: tuple[str | type[nn.Module], ...] | None) -> list[nn.Module]:
    """The submodules to shard as their own units, innermost first (FSDP2 needs a unit's
    inner units sharded before it).

    Raises:
        ValueError: a path in ``wrap`` that ``root`` does not have, with the paths it has;
            a class of which it has no submodule, with the classes it has.
    """
    if wrap is None:
        return [c for c in _expand(list(root.children())) if next(c.parameters(), None) is not None]
    named = dict(root.named_modules())
    chosen: dict[int, tuple[str, nn.Module]] = {}
    for item in wrap:
        if isinstance(item, str):
            if item not in named or item == "":
                shown = ", ".join(repr(n) for n in list(named)[1:12])
                raise ValueError(f"wrap names {item!r}, which is not a submodule of "
                                 f"{type(root).__name__}; its module paths include {shown}.")
            chosen[id(named[item])] = (item, named[item])
        else:
            found = {id(m): (n, m) for n, m in named.items() if n and isinstance(m, item)}
            if not found:
                kinds = sorted({type(m).__name__ for n, m in named.items() if n})
                raise ValueError(f"wrap names {item.__name__}, but {type(root).__name__} has no "
                                 f"submodule of that class; its submodules are {kinds}.")
            chosen.update(found)
    # deeper paths first: inner units are sharded before the units that contain them
    ordered = [m for _, m in sorted(chosen.values(), key=lambda nm: -nm[0].count("."))]
    return _expand(ordered)


def _expand(modules: list[nn.Module]) -> list[nn.Module]:
    """Containers (``nn.ModuleList``/``ModuleDict``) replaced by their items: a container
    has no forward to hook, and ``fully_shard`` refuses it (ValueError, torch 2.13)."""
    out: list[nn.Module] = []
    for m in modules:
        out.extend(_expand(list(m.children())) if isinstance(m, (nn.ModuleList, nn.ModuleDict))
                   else [m])
    return out


def _is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule) or any(
        isinstance(p, DTensor) for p in module.parameters())


@contextlib.contextmanager
def _no_gradient_sync(module: FSDPModule) -> Iterator[None]:
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def _options_for(values: dict[str, Any]) -> StateDictOptions:
    """Shards (DTensors) load as they are; whole tensors through the full-state path."""
    leaves = _tensors(values)
    if any(isinstance(t, DTensor) for t in leaves) or not leaves:
        return StateDictOptions()
    return _FULL


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _param_names(setup: Setup) -> list[str]:
    """The optimizer's parameters' names, in the optimizer's order."""
    names = {id(p): n for n, p in setup.module.named_parameters()}
    return [names[id(p)] for g in setup.optimizer.param_groups for p in g["params"]]


def _named_optimizer_state(setup: Setup, state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by index (``optimizer.state_dict()``) keyed by name."""
    flat = [p for g in state.get("param_groups", ()) for p in g["params"]]
    if all(isinstance(p, str) for p in flat):
        return state
    names = dict(zip(flat, _param_names(setup), strict=True))
    return {"state": {names[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [names[p] for p in g["params"]]}
                             for g in state["param_groups"]]}


def _indexed(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by name keyed by index, as ``optimizer.state_dict()``."""
    flat = [p for g in state["param_groups"] for p in g["params"]]
    index = {name: i for i, name in enumerate(flat)}
    return {"state": {index[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [index[p] for p in g["params"]]}
                             for g in state["param_groups"]]}


def _check_shapes(expected: dict[str, Any], saved: dict[str, torch.Tensor], source: str) -> None:
    """Raise a MismatchedCheckpointError unless the saved module has ``expected``'s names
    and (global) shapes; nothing is loaded before."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(saved[k].shape)}, model {tuple(v.shape)}"
              for k, v in expected.items() if k in saved and saved[k].shape != v.shape]
    problems = [f"{label}: {', '.join(items[:5])}" + (" ..." if len(items) > 5 else "")
                for label, items in (("missing from the checkpoint", missing),
                                     ("not in the model", unexpected),
                                     ("different shapes", shapes)) if items]
    if problems:
        raise MismatchedCheckpointError(
            f"{source} was saved from another model ({'; '.join(problems)}). Build the same "
            "architecture as when it was saved, or point to this model's checkpoint.")
