"""Start-up shared by the strategies whose replicas are worker processes.

A :class:`WorkerStrategy` finds its place in the job the same way whatever it does
with the module afterwards (DDP replicas, FSDP2 shards): from ``python train.py`` on
a host with several devices it re-runs the script in one worker per device (the
parent exits with the job's status); in a notebook it waits for ``strategy.run(fn)``;
under torchrun, SLURM or ``mirrorfit run`` it joins the world those started (one
process group, gloo on CPU, NCCL on CUDA). Subclasses add what they do to modules.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any

import torch

from mirrorfit.cluster import ClusterEnvironment, detect_environment, preemption
from mirrorfit.cluster.errors import (
    LAUNCHED_BY_MIRRORFIT,
    install_worker_excepthook,
)
from mirrorfit.cluster.launcher import launch_local
from mirrorfit.cluster.local import interactive_session
from mirrorfit.cluster.parent_watch import die_with_parent
from mirrorfit.cluster.threads import bind_worker, configure_cpu, threads_per_worker
from mirrorfit.devices import DeviceSpec, resolve_devices
from mirrorfit.strategies import process_group
from mirrorfit.strategies.strategy import Strategy

#: seconds a collective may wait before the job fails (overridden by MIRRORFIT_TIMEOUT)
DEFAULT_TIMEOUT = 300.0
TIMEOUT_ENV = "MIRRORFIT_TIMEOUT"


class WorkerStrategy(Strategy):
    """One worker process per device, started here or joined from a launcher.

    Args:
        devices: None (all GPUs, else one CPU), a count, or a list such as
            ``["cuda:0", "cuda:1"]`` / ``[0, 2]``. On a CPU-only host, ``devices=2``
            means 2 worker processes. Under an external launcher, the devices of
            this node.
        port: the rendezvous port for self-started workers; None picks a free one.
        timeout: seconds a collective may wait before the job is failed with a hint
            (default: the ``MIRRORFIT_TIMEOUT`` environment variable, else 300).
        num_threads: intra-op threads per CPU worker (default cores // workers).
        max_restarts: restart all self-started workers this many times on failure.
        precision: a precision policy name (see :class:`Strategy`).

    Raises:
        ValueError: bad ``devices`` or ``timeout``, or ``devices`` that do not match
            the workers an external launcher started on this node.
    """

    def __init__(self, devices: DeviceSpec = None, *, port: int | None = None,
                 timeout: float | None = None, num_threads: int | None = None,
                 max_restarts: int = 0, precision: str | None = None) -> None:
        super().__init__(precision)
        self._timeout = timedelta(seconds=collective_timeout(timeout))
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
        # a signal to this process (Ctrl-C, SIGTERM, SIGHUP) is an exit status too
        code = launch_local(n, port=port, max_restarts=max_restarts, num_threads=threads)
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
                f"{type(self).__name__}(devices={devices!r}) names {len(self._devices)} devices "
                f"on this node, but the {env.name} launcher started {env.local_world_size} "
                "workers here. Start one worker per device, or pass devices=None."
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
        if env.name == "torchelastic":  # mirrorfit's launcher or torchrun: die with it
            die_with_parent()
        install_worker_excepthook(self._rank, timeout=self._timeout.total_seconds())
        preemption.install()  # before the group forms: a USR1 during set-up is kept for fit
        if self._world > 1:
            process_group.init_process_group(env, backend, self._timeout)

    def _check_started(self) -> None:
        """Raise if the workers were never started (an interactive session).

        Raises:
            RuntimeError: outside ``strategy.run(fn)`` in a notebook or ``python -c``.
        """
        if self._pending_launch is not None:
            raise RuntimeError(
                f"{type(self).__name__}(devices={self._pending_launch['nprocs']}) was created "
                "in an interactive session, where no script can be re-run in the workers. Put "
                "the model building and training in a function and call strategy.run(fn).")

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
