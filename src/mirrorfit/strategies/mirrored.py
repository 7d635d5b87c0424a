"""Synchronous data parallelism on torch.distributed (DDP; gloo on CPU, NCCL on CUDA)."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from mirrorfit.cluster import ClusterEnvironment, detect_environment, preemption
from mirrorfit.cluster.errors import LAUNCHED_BY_MIRRORFIT, install_worker_excepthook
from mirrorfit.cluster.launcher import launch_local
from mirrorfit.cluster.threads import bind_worker, configure_cpu, threads_per_worker
from mirrorfit.devices import DeviceSpec, resolve_devices
from mirrorfit.strategies import ddp, process_group
from mirrorfit.strategies.capabilities import BackwardSyncControl
from mirrorfit.strategies.run import interactive_session
from mirrorfit.strategies.setup import Clipping, Setup
from mirrorfit.strategies.strategy import Strategy
from mirrorfit.strategies.sync_batchnorm import convert_sync_batchnorm

#: seconds a collective may wait before the job fails (overridden by MIRRORFIT_TIMEOUT)
DEFAULT_TIMEOUT = 300.0
TIMEOUT_ENV = "MIRRORFIT_TIMEOUT"


class MirroredStrategy(Strategy, BackwardSyncControl):
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
            BatchNorm layers to ``strategies.sync_batchnorm.SyncBatchNorm``, CPU too).
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
        super().__init__(precision)
        timeout = collective_timeout(timeout)
        self._timeout = timedelta(seconds=timeout)
        self._find_unused = find_unused_parameters
        self._sync_batchnorm = sync_batchnorm
        self._pending_launch: dict[str, Any] | None = None  # set while strategy.run must start
        env = detect_environment()
        if env.name == "local":
            self._devices = resolve_devices(devices)
            if len(self._devices) > 1 and interactive_session():
                self._pending_launch = {"nprocs": len(self._devices), "port": port,
                                        "devices": self._devices, "max_restarts": max_restarts,
                                        "threads": num_threads or threads_per_worker(
                                            len(self._devices))}
                self._world = len(self._devices)
                return
            if len(self._devices) > 1:
                self._launch_and_exit(port, num_threads, max_restarts)
            self._setup_single(num_threads)
        else:
            self._join(env, devices, num_threads)

    # --- start-up paths -----------------------------------------------------------------
    def _launch_and_exit(self, port: int | None, num_threads: int | None,
                         max_restarts: int) -> None:
        n = len(self._devices)
        os.environ["MIRRORFIT_DEVICES"] = ",".join(self._devices)
        threads = num_threads or threads_per_worker(n)
        sys.stdout.flush()
        from torch.distributed.elastic.multiprocessing.api import SignalException

        try:
            code = launch_local(n, port=port, max_restarts=max_restarts, num_threads=threads)
        except SignalException as exc:  # e.g. SIGTERM to this parent: the agent passed it
            # on to the workers (they back up and exit, see cluster.preemption); no traceback
            print(f"mirrorfit: {exc.sigval.name} received; the workers were stopped",
                  file=sys.stderr)
            code = 128 + int(exc.sigval)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the workers did the work; do not run the rest of the script here

    def _setup_single(self, num_threads: int | None) -> None:
        self._device = torch.device(self._devices[0])
        if self._device.type == "cpu":
            configure_cpu(num_threads)  # one process: keep the user's thread count
        preemption.install()  # USR1/SIGTERM: back up, requeue, exit (cluster.preemption)

    def _join(self, env: ClusterEnvironment, devices: DeviceSpec,
              num_threads: int | None) -> None:
        self._rank, self._world, self._local_rank = env.rank, env.world_size, env.local_rank
        listed = os.environ.get("MIRRORFIT_DEVICES")
        self._devices = listed.split(",") if listed else resolve_devices(devices)
        if devices is not None and not listed and len(self._devices) != env.local_world_size:
            raise ValueError(
                f"MirroredStrategy(devices={devices!r}) names {len(self._devices)} devices on "
                f"this node, but the {env.name} launcher started {env.local_world_size} workers "
                "here. Start one worker per device, or pass devices=None."
            )
        self._device = torch.device(self._devices[self._local_rank % len(self._devices)])
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
            backend = "nccl"
        else:
            threads = num_threads or threads_per_worker(env.local_world_size)
            configure_cpu(threads)
            if os.environ.get(LAUNCHED_BY_MIRRORFIT):  # torchrun and srun place their own
                bind_worker(env.local_rank, env.local_world_size, threads)
            backend = "gloo"
        install_worker_excepthook(self._rank, timeout=self._timeout.total_seconds())
        preemption.install()  # before the group forms: a USR1 during set-up is kept for fit
        if self._world > 1:
            process_group.init_process_group(env, backend, self._timeout)

    # --- modules ------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        if self._pending_launch is not None:
            raise RuntimeError(
                f"MirroredStrategy(devices={self._pending_launch['nprocs']}) was created in an "
                "interactive session, where no script can be re-run in the workers. Put the "
                "model building and training in a function and call strategy.run(fn).")
        if self._sync_batchnorm:
            convert_sync_batchnorm(module)  # in place, also with one replica (same layers)
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

    @property
    def devices(self) -> list[str]:
        return list(self._devices)


def collective_timeout(timeout: float | None) -> float:
    """``timeout``, else ``MIRRORFIT_TIMEOUT``, else 300 seconds; must be > 0.

    Raises:
        ValueError: a value that is not a positive number of seconds.
    """
    source = "timeout"
    if timeout is None:
        value = os.environ.get(TIMEOUT_ENV)
        if not value:
            return DEFAULT_TIMEOUT
        source = f"environment variable {TIMEOUT_ENV}"
        try:
            timeout = float(value)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, received {value!r}.") from None
    if not timeout > 0:
        raise ValueError(f"{source} must be > 0 seconds, received {timeout!r}.")
    return float(timeout)


class MultiWorkerMirroredStrategy(MirroredStrategy):
    """tf.distribute's name for the same thing: MirroredStrategy already spans every
    node of the torchrun, ``mirrorfit run`` or SLURM world it finds."""
