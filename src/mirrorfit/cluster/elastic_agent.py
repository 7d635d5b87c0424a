"""mirrorfit's hooks into torch elastic's agent (the engine torchrun uses), which
``elastic_launch`` builds itself: for the call, a subclass of
``LocalElasticAgent`` stands in that

- SIGKILLs the other workers as soon as one has failed (torch would send SIGTERM
  and wait 30 s: a worker in ``fit`` only records SIGTERM, see
  ``cluster.preemption``), and sets aside an unreadable error file before torch
  reads it (torch's reader raises on a partial JSON file and crashed the launcher);
- says why it restarts the group (it restarts silently);
- remembers how the workers ended when a signal stopped the job (Ctrl-C: they back
  up and say where they stopped; the launcher then adds nothing), and on a second
  signal during that wait kills them at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from mirrorfit.cluster.errors import WorkerFailure, failure_from_elastic, root_cause

#: workers ended by kill_survivors_of_a_failure (their exit is not a cause)
killed_pids: set[int] = set()
#: exit codes of the workers stopped by the last signal the launcher passed on
stopped_exit_codes: dict[int, int | None] = {}
#: each worker's error file by global rank (its crash dump lies beside it)
error_files: dict[int, str] = {}


def restart_message(attempt: int, max_restarts: int, failures: list[WorkerFailure]) -> str:
    """What the parent prints before restarting the group (the traceback first, if any)."""
    if not failures:
        return "mirrorfit: restarting the workers (the group's membership changed)\n"
    cause = root_cause(failures)
    text = cause.describe().rstrip()
    head, _, body = text.partition("\n")
    reason = head.rstrip(".:") + (f": {cause.message}" if cause.message else "")
    return ((f"mirrorfit: {text}\n" if body else "") +
            f"mirrorfit: restart {attempt}/{max_restarts} (previous attempt: {reason})\n")


def _procs(pcontext: Any) -> dict[int, Any]:
    handlers = getattr(pcontext, "subprocess_handlers", None) or {}
    return {rank: h.proc for rank, h in handlers.items()}


def kill_survivors_of_a_failure(pcontext: Any) -> None:
    """Once a worker has failed, SIGKILL the others before the agent stops them.

    A failed group has nothing left to save; a worker stuck outside a collective
    would otherwise hold the failed job for torch's 30 s.
    """
    procs = list(_procs(pcontext).values())
    if not any(p.poll() not in (None, 0) for p in procs):
        return
    for proc in procs:
        if proc.poll() is None:
            killed_pids.add(proc.pid)  # their -9 is a consequence: not reported
            proc.send_signal(signal.SIGKILL)


def set_aside_unreadable_error_files(pcontext: Any) -> None:
    """Rename the error file of an exited worker that is not whole JSON (a writer
    killed half-way, one that is not mirrorfit's), so torch reads "no details"."""
    files = getattr(pcontext, "error_files", None) or {}
    for rank, proc in _procs(pcontext).items():
        path = files.get(rank)
        if proc.poll() is None or not path or not os.path.isfile(path):
            continue
        try:
            with open(path) as fp:
                json.load(fp)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                os.replace(path, path + ".unreadable")


def _kill_now(pcontext: Any) -> None:
    for proc in _procs(pcontext).values():
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def mirrorfit_agent() -> Iterator[None]:
    """Inside, ``elastic_launch`` builds mirrorfit's agent (see the module docstring)."""
    import torch.distributed.launcher.api as api

    base = getattr(api, "LocalElasticAgent", None)
    if base is None or not hasattr(base, "_restart_workers"):  # another torch layout
        yield
        return

    class _Agent(base):  # type: ignore[misc, valid-type]
        def _monitor_workers(self, worker_group: Any) -> Any:
            pcontext = getattr(self, "_pcontext", None)
            kill_survivors_of_a_failure(pcontext)
            set_aside_unreadable_error_files(pcontext)
            files = getattr(pcontext, "error_files", None) or {}
            error_files.update({w.global_rank: files[w.local_rank]
                                for w in worker_group.workers if w.local_rank in files})
            result = super()._monitor_workers(worker_group)
            if result.is_failed():
                self._mirrorfit_failures: dict[int, Any] = dict(result.failures)
            return result

        def _restart_workers(self, worker_group: Any) -> None:
            total = worker_group.spec.max_restarts
            attempt = total - getattr(self, "_remaining_restarts", 0)
            seen = getattr(self, "_mirrorfit_failures", {})
            failures = [failure_from_elastic(r, f, error_files.get(r)) for r, f in seen.items()
                        if f.pid not in killed_pids]
            sys.stderr.write(restart_message(attempt, total, failures))
            sys.stderr.flush()
            self._mirrorfit_failures = {}
            super()._restart_workers(worker_group)

        def _shutdown(self, death_sig: signal.Signals = signal.SIGTERM,
                      *args: Any, **kwargs: Any) -> None:
            pcontext = getattr(self, "_pcontext", None)
            try:
                super()._shutdown(death_sig, *args, **kwargs)
            except BaseException:  # a second Ctrl-C while the workers back up: stop now
                _kill_now(pcontext)
                raise
            finally:
                stopped_exit_codes.clear()
                stopped_exit_codes.update({r: p.poll() for r, p in _procs(pcontext).items()})

    setattr(api, "LocalElasticAgent", _Agent)  # noqa: B010 - mypy forbids assigning a class
    try:
        yield
    finally:
        setattr(api, "LocalElasticAgent", base)  # noqa: B010
