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
  the root cause once (see ``cluster.errors``). With ``max_restarts``, the agent
  restarts the whole group instead, and the parent prints the attempt and why:
  ``mirrorfit: restart 1/3 (previous attempt: worker rank 1 was killed by SIGKILL)``.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mirrorfit.advice import warn
from mirrorfit.cluster import elastic_agent
from mirrorfit.cluster.errors import (
    INTERRUPTED_EXIT,
    LAUNCHED_BY_MIRRORFIT,
    failure_from_elastic,
    format_failures,
)
from mirrorfit.cluster.interfaces import interface_towards
from mirrorfit.cluster.parent_watch import LAUNCHER_PID_ENV

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
    # a port the previous run's store used may still hold TIME_WAIT connections; reusing
    # it is safe (SO_REUSEADDR still refuses a port that another socket listens on)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def host_store(port: int | None = None, host: str = "127.0.0.1") -> tuple[dist.TCPStore, int]:
    """Start a TCPStore server bound to ``host`` (loopback by default); returns it and
    its port."""
    sock = bind_loopback(port or 0, host)
    chosen = sock.getsockname()[1]
    store = dist.TCPStore(host, chosen, is_master=True, multi_tenant=True,
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


@dataclass(frozen=True)
class LaunchSpec:
    """What to start: ``nprocs`` workers on each of ``nnodes`` hosts.

    One host (the default): the store is hosted here on loopback, on ``port`` or a
    free one. Several hosts: every node names the same ``master`` ``HOST:PORT``;
    node 0 hosts the store there, the others join it.
    """

    nprocs: int
    nnodes: int = 1
    node_rank: int = 0
    master: str | None = None
    port: int | None = None
    max_restarts: int = 0
    num_threads: int = 1

    def validate(self) -> None:
        if self.nprocs < 1 or self.nnodes < 1:
            raise ValueError(f"Need at least one worker on one node; received nprocs="
                             f"{self.nprocs}, nnodes={self.nnodes}.")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node rank must satisfy 0 <= node_rank < nnodes; received "
                             f"node_rank={self.node_rank}, nnodes={self.nnodes}.")
        if self.nnodes > 1 and self.master is None:
            raise ValueError("Several nodes need --master HOST:PORT, the same on every node.")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, received {self.max_restarts}.")


def parse_master(master: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port), with a clear error."""
    host, sep, port = master.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--master must be HOST:PORT with a port in 1..65535; received "
                         f"{master!r}.")
    return host, int(port)


def warn_if_oversubscribed(nprocs: int, cores: int | None = None) -> None:
    """Warn when ``nprocs`` CPU workers are more than this host's cores (they then share
    cores and each step waits for the slowest). Hosts with a GPU per worker are fine."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= nprocs:
        return
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = cores or os.cpu_count() or 1
    if nprocs > cores:
        warn(f"starting {nprocs} CPU workers on {cores} cores: the workers share the cores, "
             f"so each step waits for descheduled ones; {cores} workers (devices={cores}) "
             "are the most that run in parallel here.")


def note_ignored_master_env(environ: Mapping[str, str] | None = None) -> str | None:
    """Say once (and return) that MASTER_ADDR/MASTER_PORT do not steer a job that
    mirrorfit starts on one host; None when neither is set."""
    env = os.environ if environ is None else environ
    named = [f"{k}={env[k]}" for k in ("MASTER_ADDR", "MASTER_PORT") if env.get(k)]
    if not named:
        return None
    text = (f"{' and '.join(named)} ignored: the workers mirrorfit starts on this host "
            "meet on a free port of 127.0.0.1, so no port needs choosing (pass "
            "MirroredStrategy(port=...) to pick one; for several hosts use `mirrorfit run "
            "--nnodes N --node-rank R --master HOST:PORT` or torchrun).")
    warn(text)
    return text


def launch_local(nprocs: int, *, port: int | None = None, max_restarts: int = 0,
                 num_threads: int = 1, command: Sequence[str] | None = None) -> int:
    """Run ``command`` (default: this program) in ``nprocs`` workers on this host."""
    return launch(LaunchSpec(nprocs, port=port, max_restarts=max_restarts,
                             num_threads=num_threads), command)


def launch(spec: LaunchSpec, command: Sequence[str] | None = None) -> int:
    """Start the workers of ``spec`` under torch elastic; return the exit status."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.launcher.api import elastic_launch

    spec.validate()
    warn_if_oversubscribed(spec.nprocs)
    if spec.master is None:
        note_ignored_master_env()
    args = list(command) if command is not None else worker_command()
    store, host, port = _store_for(spec)
    loopback = host.startswith("127.") or host == "localhost"
    os.environ.update({
        LAUNCHED_BY_MIRRORFIT: "1",
        LAUNCHER_PID_ENV: str(os.getpid()),  # workers die with this process (parent_watch)
        STORE_ENV: f"{host}:{port}",
        "OMP_NUM_THREADS": str(spec.num_threads),
        "MIRRORFIT_NUM_THREADS": str(spec.num_threads),
        "PYTHONUNBUFFERED": os.environ.get("PYTHONUNBUFFERED", "1"),
        # the agent would otherwise host a second TCPStore for the workers, listening on
        # every interface; ours join through STORE_ENV, on loopback (and see TORCH-NOTES 2)
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    })
    _choose_gloo_interface(host, loopback)
    _quiet_elastic_logs()
    try:
        with elastic_agent.mirrorfit_agent():
            elastic_launch(_config(spec, host, port, loopback), sys.executable)(*args)
    except ChildFailedError as exc:
        failures = [failure_from_elastic(r, f, elastic_agent.error_files.get(r))
                    for r, f in exc.failures.items() if f.pid not in elastic_agent.killed_pids]
        if failures and all(f.exitcode == INTERRUPTED_EXIT for f in failures):
            return INTERRUPTED_EXIT  # Ctrl-C sent to the workers: the chief said where
        sys.stderr.write(format_failures(failures, spec.nprocs * spec.nnodes))
        return 1
    except (SignalException, KeyboardInterrupt) as exc:  # Ctrl-C, SIGTERM, SIGHUP to us
        return stopped_by_signal(exc)
    except RendezvousError as exc:  # a node that cannot reach the master, or never joined
        sys.stderr.write(rendezvous_message(spec, host, port, exc))
        return 1
    finally:
        del store
    return 0


def stopped_by_signal(exc: BaseException) -> int:
    """This process was signalled (Ctrl-C, SIGTERM, SIGHUP) and the agent passed the
    signal on: workers in ``fit`` backed up and the chief printed where they stopped
    (``cluster.preemption``). Say something only when no worker could. Returns the
    exit status, 128 + the signal as a shell reports it."""
    sig = getattr(exc, "sigval", signal.SIGINT)
    codes = list(elastic_agent.stopped_exit_codes.values())
    if not (codes and all(c in (0, INTERRUPTED_EXIT) for c in codes)):
        print(f"mirrorfit: {sig.name} received; the workers were stopped", file=sys.stderr)
    return 128 + int(sig)


def rendezvous_message(spec: LaunchSpec, host: str, port: int, exc: BaseException) -> str:
    """One line for a node that could not form the job with the others."""
    cause = exc.__cause__ or exc
    return (f"mirrorfit: node {spec.node_rank} of {spec.nnodes} could not form the job "
            f"through {host}:{port} ({type(cause).__name__}: {str(cause).strip()}); start "
            f"every node with the same --nnodes and --master, node 0 first, and check that "
            f"this host reaches {host} on port {port}.\n")


def _choose_gloo_interface(host: str, loopback: bool) -> None:
    """Unless the user named one, have gloo use the interface that reaches the master
    (``cluster.interfaces``): its default, the host name's address, may be loopback."""
    if "GLOO_SOCKET_IFNAME" in os.environ:
        return
    name = "lo" if loopback else interface_towards(host)
    if name is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = name


def _store_for(spec: LaunchSpec) -> tuple[dist.TCPStore | None, str, int]:
    """Host the rendezvous store here (node 0) or name the master's."""
    if spec.master is None:
        store, port = host_store(spec.port)
        return store, "127.0.0.1", port
    host, port = parse_master(spec.master)
    if spec.node_rank != 0:
        return None, host, port
    store, _ = host_store(port, host=socket.gethostbyname(host))
    return store, host, port


def _config(spec: LaunchSpec, host: str, port: int, loopback: bool) -> Any:
    from torch.distributed.launcher.api import LaunchConfig

    run_id = uuid.uuid4().hex[:12] if spec.master is None else f"mirrorfit-{host}-{port}"
    return LaunchConfig(
        min_nodes=spec.nnodes, max_nodes=spec.nnodes, nproc_per_node=spec.nprocs,
        run_id=run_id, rdzv_backend="c10d", rdzv_endpoint=f"{host}:{port}",
        rdzv_configs={"is_host": spec.node_rank == 0}, max_restarts=spec.max_restarts,
        monitor_interval=0.1, local_addr="127.0.0.1" if loopback else None,
    )


def _quiet_elastic_logs() -> None:
    """The agent's own log lines duplicate what mirrorfit prints; keep errors only."""
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    # "Received 2 death signal, shutting down workers": the workers say where they stopped
    logging.getLogger("torch.distributed.elastic.agent.server.api").setLevel(logging.ERROR)
