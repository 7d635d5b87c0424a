"""Synchronous data parallelism on torch.distributed (DDP; gloo on CPU, NCCL on CUDA)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from mirrorfit import keras_models
from mirrorfit.devices import DeviceSpec
from mirrorfit.strategies import ddp, process_group
from mirrorfit.strategies.capabilities import BackwardSyncControl
from mirrorfit.strategies.setup import Clipping, Setup
from mirrorfit.strategies.sync_batchnorm import convert_sync_batchnorm
from mirrorfit.strategies.workers import (  # noqa: F401  (re-exported: older imports)
    DEFAULT_TIMEOUT,
    TIMEOUT_ENV,
    WorkerStrategy,
    collective_timeout,
)


class MirroredStrategy(WorkerStrategy, BackwardSyncControl):
    """Every replica holds the whole model; each step, each replica computes its
    share of the global batch and gradients are averaged with an all-reduce.

    Run as ``python train.py``, a CPU host with ``devices=2`` (or a GPU host with 2
    GPUs) starts its own worker processes: the constructor re-runs the script in
    each worker under torch elastic and the parent exits with the job's status.
    Under torchrun or SLURM it joins the world those started instead.

    Args:
        devices: None (all GPUs, else one CPU), a count, or a list such as
            ``["cuda:0", "cuda:1"]`` / ``[0, 2]``. On a CPU-only host, ``devices=2``
            means 2 worker processes. Under an external launcher, the devices of
            this node.
        port: the rendezvous port for self-started workers; None picks a free one.
        timeout: seconds a collective may wait before the job is failed with a hint
            (default: the ``MIRRORFIT_TIMEOUT`` environment variable, else 300; torch's
            own default is 30 minutes for gloo).
        num_threads: intra-op threads per CPU worker (default cores // workers).
        max_restarts: restart all self-started workers this many times on failure.
        find_unused_parameters: None (default) finds parameters without a gradient in
            fit's first update and then lets DDP handle them; True lets DDP look every
            step; False requires every parameter every step (an error names the others).
        sync_batchnorm: compute BatchNorm statistics over the global batch (converts
            BatchNorm layers to ``strategies.sync_batchnorm.SyncBatchNorm``, CPU too; a
            Keras 3 model's BatchNormalization layers likewise, ``mirrorfit.keras_models``).
        precision: ``"bf16-mixed"``, ``"16-mixed"`` or ``"32"`` (Lightning's names; Keras's
            work too); None follows ``mirrorfit.mixed_precision.global_policy()``.

    In a notebook or ``python -c`` there is no script to re-run: the strategy then
    waits, and ``strategy.run(fn)`` starts the workers on ``fn``.

    Example:
        >>> import mirrorfit
        >>> strategy = mirrorfit.MirroredStrategy()   # doctest: +SKIP
        >>> with strategy.scope():                     # doctest: +SKIP
        ...     model = mirrorfit.Model(module)
        ...     model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> model.fit(x, y, batch_size=64 * strategy.num_replicas_in_sync)  # doctest: +SKIP
    """

    def __init__(self, devices: DeviceSpec = None, *, port: int | None = None,
                 timeout: float | None = None, num_threads: int | None = None,
                 max_restarts: int = 0, find_unused_parameters: bool | None = None,
                 sync_batchnorm: bool = False, precision: str | None = None) -> None:
        self._find_unused = find_unused_parameters
        self._sync_batchnorm = sync_batchnorm
        super().__init__(devices, port=port, timeout=timeout, num_threads=num_threads,
                         max_restarts=max_restarts, precision=precision)

    # --- modules ------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        self._check_started()
        if self._sync_batchnorm:
            convert_sync_batchnorm(module)  # in place, also with one replica (same layers)
            keras_models.convert_sync_batchnorm(module)  # Keras 3 BatchNormalization layers
        module = module.to(self._device)
        if not self.distributed:
            return module  # DDP with one rank costs ~23% per step for nothing
        return ddp.wrap(module, self._device, self._find_unused)

    def setup(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
              precision: str = "float32", clipping: Clipping | None = None,
              jit_compile: bool = False) -> Setup:
        setup = super().setup(module, optimizer, precision=precision, clipping=clipping,
                              jit_compile=jit_compile)
        if setup.placed is not module:
            # fit's first update checks for parameters without gradients (strategies.ddp)
            setup.private["first_update"] = ddp.needs_first_update_check(setup.placed)
            process_group.on_teardown(setup.release)
        return setup

    def no_backward_sync(self, setup: Setup,
                         enabled: bool) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync`` while accumulating, and for fit's first update, whose gradients
        :func:`ddp.finish_first_update` averages by hand."""
        placed = setup.placed
        if (enabled or setup.private.get("first_update")) and isinstance(placed, ddp.MirroredDDP):
            return placed.no_sync()
        return contextlib.nullcontext()

    def optimizer_step(self, setup: Setup) -> bool:
        if setup.private.get("first_update"):
            self._finish_first_update(setup)
        return super().optimizer_step(setup)

    def _finish_first_update(self, setup: Setup) -> None:
        """Average the first update's gradients by hand and name (or handle) parameters
        that got none; a new DDP wrapper replaces the old one when some did."""
        setup.private["first_update"] = False
        placed = ddp.finish_first_update(setup.placed)
        if placed is not setup.placed:
            setup.placed = setup.wrapped = placed
            if setup.jit_compile:
                setup.compile()


class MultiWorkerMirroredStrategy(MirroredStrategy):
    """tf.distribute's name for the same thing: MirroredStrategy already spans every
    node of the torchrun, ``mirrorfit run`` or SLURM world it finds."""
