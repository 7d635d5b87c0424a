"""How workers start when a user runs ``python train.py``: mirrorfit starts N
copies of the same command under torch elastic's agent (the engine torchrun
uses), on this host, and waits for them.

- No MASTER_PORT chores: the parent hosts the rendezvous store on a free port of
  the loopback interface (``master_listen_fd``), so nothing listens outside the
  host and two jobs on one host never collide. A port the user names is checked
  and a taken one is a clear error.
- Every worker joins through a ``PrefixStore`` named after the run and the
  restart attempt, so a restarted group never reads the previous attempt's keys
  (TORCH-NOTES trap 2).
- One failure ends all workers (the agent stops the group) and the parent prints
  the root cause once (see ``cluster.errors``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta

import torch.distributed as dist

from mirrorfit.cluster.errors import (
    LAUNCHED_BY_MIRRORFIT,
    failure_from_elastic,
    format_failures,
)

STORE_ENV = "MIRRORFIT_STORE"
_LOG = logging.getLogger("mirrorfit")


class PortInUseError(OSError):
    """The port the user asked for is taken."""


def bind_loopback(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on ``host:port`` (0 = a free port).

    Raises:
        PortInUseError: ``port`` is taken, with the fix in the message.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port={port} is already in use on {host}; pass another port, or port=None to "
                "let mirrorfit pick a free one."
            ) from None
        raise
    sock.listen(128)
    return sock


def host_store(port: int | None = None) -> tuple[dist.TCPStore, int]:
    """Start a TCPStore server on loopback; returns it and its port."""
    sock = bind_loopback(port or 0)
    chosen = sock.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", chosen, is_master=True, multi_tenant=True,
                          wait_for_workers=False, master_listen_fd=sock.detach(),
                          timeout=timedelta(seconds=60))
    return store, chosen


def worker_command() -> list[str]:
    """The argv (after the interpreter) that re-runs this program in a worker."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        name = spec.name.removesuffix(".__main__")
        return ["-m", name, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.exists(script):
        raise RuntimeError(
            "MirroredStrategy with several CPU workers re-runs your script in each worker, but "
            f"this program has no script file (sys.argv[0]={script!r}: an interactive session or "
            "`python -c`). Put the training code in a file and run `python train.py`, or use "
            "strategy.run(fn) to start workers on a function."
        )
    return [script, *sys.argv[1:]]


def launch_local(nprocs: int, *, port: int | None = None, max_restarts: int = 0,
                 num_threads: int = 1, command: Sequence[str] | None = None) -> int:
    """Run ``command`` (default: this program) in ``nprocs`` workers; return the exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = list(command) if command is not None else worker_command()
    store, store_port = host_store(port)
    os.environ.update({
        LAUNCHED_BY_MIRRORFIT: "1",
        STORE_ENV: f"127.0.0.1:{store_port}",
        "OMP_NUM_THREADS": str(num_threads),
        "MIRRORFIT_NUM_THREADS": str(num_threads),
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
    })
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=uuid.uuid4().hex[:12],
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{store_port}",
        rdzv_configs={"is_host": True}, max_restarts=max_restarts, monitor_interval=0.1,
        local_addr="127.0.0.1",
    )
    _quiet_elastic_logs()
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as exc:
        failures = [failure_from_elastic(r, f) for r, f in exc.failures.items()]
        sys.stderr.write(format_failures(failures, nprocs))
        return 1
    finally:
        del store
    return 0


def _quiet_elastic_logs() -> None:
    """The agent's own log lines duplicate what mirrorfit prints; keep errors only."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
