"""``strategy.run(fn, *args)``: train in a function, from a notebook or a script.

- In a notebook (or ``python -c``), ``MirroredStrategy(devices=2)`` cannot re-run
  a script, so it waits; ``strategy.run(fn)`` then starts the workers under torch
  elastic with ``fn`` as the entrypoint, each joined exactly like a script's
  worker (loopback store, threads, malloc settings, error file), runs ``fn``
  inside ``strategy.scope()`` and returns the chief's return value. Workers are
  forked (functions defined in a notebook cannot be pickled) unless CUDA is
  already initialised here, where they are spawned and ``fn`` must be importable.
- In a worker (a script re-run by ``MirroredStrategy``, torchrun, SLURM) or with
  one replica, ``run`` calls ``fn`` here, inside the scope, and returns its value.

One failure ends every worker; ``run`` raises :class:`WorkersFailed` with the
failing rank's traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_ERRORS_ENV = "MIRRORFIT_RUN_ERRORS"


class WorkersFailed(RuntimeError):
    """A worker started by ``strategy.run`` failed; the message holds its traceback."""


def run(strategy: Any, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on every replica; see the module docstring."""
    if not callable(fn):
        raise TypeError(f"run() needs a function; received {type(fn).__name__}.")
    pending = getattr(strategy, "_pending_launch", None)
    if pending is None:
        with strategy.scope():
            return fn(*args, **kwargs)
    results = _launch(strategy, pending, fn, args, kwargs)
    return results[0]


def _launch(strategy: Any, pending: dict[str, Any], fn: Callable[..., Any],
            args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[int, Any]:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from mirrorfit.cluster.errors import (
        LAUNCHED_BY_MIRRORFIT,
        failure_from_elastic,
        format_failures,
    )
    from mirrorfit.cluster.launcher import STORE_ENV, _quiet_elastic_logs, host_store

    n = int(pending["nprocs"])
    errors = tempfile.mkdtemp(prefix="mirrorfit-run-")
    store, port = host_store(pending["port"])
    fork = sys.platform.startswith("linux") and not torch.cuda.is_initialized()
    env = {LAUNCHED_BY_MIRRORFIT: "1", STORE_ENV: f"127.0.0.1:{port}",
           "OMP_NUM_THREADS": str(pending["threads"]),
           "MIRRORFIT_NUM_THREADS": str(pending["threads"]),
           "MIRRORFIT_DEVICES": ",".join(pending["devices"]), _ERRORS_ENV: errors,
           "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=uuid.uuid4().hex[:12],
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{port}",
        rdzv_configs={"is_host": True}, max_restarts=int(pending["max_restarts"]),
        monitor_interval=0.1, local_addr="127.0.0.1",
        start_method="fork" if fork else "spawn")
    _quiet_elastic_logs()
    sys.stdout.flush()
    try:
        return elastic_launch(config, _worker)(strategy, fn, args, kwargs)
    except ChildFailedError as exc:
        found = {r: failure_from_elastic(r, f) for r, f in exc.failures.items()}
        for r in range(n):  # torch names only the first process it saw fail; read them all
            path = os.path.join(errors, f"rank{r}.json")
            if os.path.exists(path):
                found[r] = failure_from_elastic(r, SimpleNamespace(
                    exitcode=1, error_file=path, timestamp=os.path.getmtime(path)))
        raise WorkersFailed(format_failures(list(found.values()), n).rstrip()) from None
    finally:
        del store
        shutil.rmtree(errors, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker(strategy: Any, fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Any:
    """Entry point of each worker: join like a script worker, run ``fn``, leave cleanly."""
    from mirrorfit.cluster import detect_environment
    from mirrorfit.strategies import process_group

    try:
        strategy._join(detect_environment(), None, strategy._pending_launch["threads"])
        strategy._pending_launch = None
        with strategy.scope():
            result = fn(*args, **kwargs)
        process_group.teardown()
        return result
    except BaseException:
        if os.environ.get(_ERRORS_ENV) and os.environ.get("RANK"):
            path = os.path.join(os.environ[_ERRORS_ENV], f"rank{os.environ['RANK']}.json")
            os.environ["TORCHELASTIC_ERROR_FILE"] = path
        sys.excepthook(*sys.exc_info())  # the worker hook: error file, then exit(1)
        raise
