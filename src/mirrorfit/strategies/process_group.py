"""Joining and leaving the process group, with the teardown that avoids gloo's
abort at interpreter exit (TORCH-NOTES trap 1): drop every DDP wrapper, collect
garbage, meet at a barrier, then destroy the group."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from mirrorfit.cluster.crash_dump import DEBUG_ENV
from mirrorfit.cluster.environment import ClusterEnvironment
from mirrorfit.cluster.launcher import STORE_ENV

#: callables that drop a strategy's references to DDP wrappers before teardown
_releasers: list[weakref.WeakMethod[Callable[[], None]] | Callable[[], None]] = []
_registered = False
_unchecked_group: Any = None  # see ddp_group()


def init_process_group(env: ClusterEnvironment, backend: str, timeout: timedelta) -> None:
    """Join the group described by ``env`` (no-op if already joined)."""
    if dist.is_initialized():
        return
    with _collective_checks(os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")):
        _init(env, backend, timeout)
    _register_teardown()


@contextlib.contextmanager
def _collective_checks(enabled: bool) -> Iterator[None]:
    """With ``MIRRORFIT_DEBUG=1``: torch's ``TORCH_DISTRIBUTED_DEBUG=DETAIL`` for the
    group being formed, which wraps it in a checker that compares every collective's
    kind and shapes across ranks first and raises "Detected mismatch between
    collectives on ranks. Rank 0 is running collective: …" where one would hang or
    abort. The level drops to INFO once the group exists: in torch 2.13 (CPU) DDP's
    constructor segfaults under DETAIL (measured here); the checker stays on the group.
    DDP all-reduces over an unchecked twin of the group (:func:`ddp_group`)."""
    if not enabled:
        yield
        return
    dist.set_debug_level(dist.DebugLevel.DETAIL)
    try:
        yield
    finally:
        dist.set_debug_level(dist.DebugLevel.INFO)
    global _unchecked_group
    _unchecked_group = dist.new_group(backend=dist.get_backend())


def ddp_group() -> Any:
    """The group DDP should all-reduce over: None (the default group), or under
    ``MIRRORFIT_DEBUG`` a twin created without torch's collective checker, because
    in torch 2.13 DDP's constructor segfaults on a checked group (measured on CPU).
    A strategy collective that meets DDP's all-reduce on another rank then fails in
    the checker's barrier, naming the rank that never came ("Ranks 1 failed to pass
    monitoredBarrier"), with the traceback of the extra call."""
    return _unchecked_group


def _init(env: ClusterEnvironment, backend: str, timeout: timedelta) -> None:
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
            dist.destroy_process_group()  # every group, the unchecked twin included
    global _unchecked_group
    _unchecked_group = None


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
