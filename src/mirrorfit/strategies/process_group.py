"""Joining and leaving the process group, with the teardown that avoids gloo's
abort at interpreter exit (TORCH-NOTES trap 1): drop every DDP wrapper, collect
garbage, meet at a barrier, then destroy the group."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import weakref
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist

from mirrorfit.cluster.environment import ClusterEnvironment
from mirrorfit.cluster.launcher import STORE_ENV

#: callables that drop a strategy's references to DDP wrappers before teardown
_releasers: list[weakref.WeakMethod[Callable[[], None]] | Callable[[], None]] = []
_registered = False


def init_process_group(env: ClusterEnvironment, backend: str, timeout: timedelta) -> None:
    """Join the group described by ``env`` (no-op if already joined)."""
    if dist.is_initialized():
        return
    store_addr = os.environ.get(STORE_ENV)
    if store_addr:  # started by mirrorfit's launcher: the parent's loopback store
        host, port = store_addr.rsplit(":", 1)
        _join_prefixed(host, int(port), env, backend, timeout)
    elif env.name == "torchelastic" and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun's agent store outlives restarts: without a prefix per attempt a new
        # rank can read the previous attempt's addresses (TORCH-NOTES trap 2)
        _join_prefixed(env.main_address, env.main_port, env, backend, timeout)
    elif env.name == "torchelastic":
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                timeout=timeout)
    else:
        dist.init_process_group(backend, init_method=f"tcp://{env.main_address}:{env.main_port}",
                                rank=env.rank, world_size=env.world_size, timeout=timeout)
    _register_teardown()


def _join_prefixed(host: str, port: int, env: ClusterEnvironment, backend: str,
                   timeout: timedelta) -> None:
    """Join through a client of the store at ``host:port``, under a prefix named after the
    run and the restart attempt."""
    base = dist.TCPStore(host, port, is_master=False, timeout=timeout)
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    store = dist.PrefixStore(f"mirrorfit/{run_id}/{env.restart_count}", base)
    dist.init_process_group(backend, store=store, rank=env.rank, world_size=env.world_size,
                            timeout=timeout)


def on_teardown(release: Callable[[], None]) -> None:
    """Call ``release`` (weakly held if a bound method) before the group is destroyed."""
    try:
        _releasers.append(weakref.WeakMethod(release))
    except TypeError:
        _releasers.append(release)


def teardown() -> None:
    """Leave the group cleanly; safe to call twice."""
    for ref in _releasers:
        fn = ref() if isinstance(ref, weakref.WeakMethod) else ref
        if fn is not None:
            fn()
    _releasers.clear()
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _teardown_at_exit() -> None:
    """Teardown at interpreter exit, silent when the peers are gone.

    A rank that ends while another has failed (or is still waiting in a
    collective) cannot meet it at the barrier; the failing rank's error is the
    one the launcher reports, so a second traceback here would only be noise.
    """
    with contextlib.suppress(Exception):
        teardown()


def _register_teardown() -> None:
    global _registered
    if not _registered:
        atexit.register(_teardown_at_exit)
        _registered = True
