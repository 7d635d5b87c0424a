"""One clear error per failed job.

Workers record an uncaught exception in the error file torch elastic gives them
(``TORCHELASTIC_ERROR_FILE``, torch's own JSON layout plus a precise time) and
exit at once, without printing a traceback of their own when mirrorfit's
launcher will print it. The launcher then names the *first* failure (the root
cause; the other ranks' "connection closed" errors are its consequences) and
prints its traceback once, labelled with the rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mirrorfit.cluster import crash_dump

#: set by mirrorfit's launcher in each worker's environment
LAUNCHED_BY_MIRRORFIT = "MIRRORFIT_LAUNCHED"
#: exit status of a worker stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED_EXIT = 130

_SECONDARY = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "DistBackendError", "Socket Timeout", "connectFullMesh")
#: how torch reports a collective or store wait that ran past the process-group timeout
_TIMEOUT_MARKERS = ("Timed out waiting", "timed out after", "Watchdog caught collective",
                    "wait timeout after", "DistStoreError: Timed out")


def timeout_hint(text: str, timeout: float | None) -> str:
    """A hint for a traceback that ends in a collective timeout ('' for other errors)."""
    if not any(marker in text for marker in _TIMEOUT_MARKERS):
        return ""
    limit = f"timeout={timeout:g} s" if timeout else "the collective timeout"
    return (f"mirrorfit: a collective waited longer than {limit}: some replica never reached it.\n"
            "  Usual causes: a collective (reduce, barrier, evaluate) run on some ranks only; a "
            "rank that left early or is stuck outside training; ranks given different data.\n"
            "  If the wait is legitimate (slow data loading, a long save on the chief), raise "
            "the limit: MirroredStrategy(timeout=seconds) or MIRRORFIT_TIMEOUT=seconds.\n")


def install_worker_excepthook(rank: int, timeout: float | None = None) -> None:
    """Record uncaught exceptions of this worker; exit without the finalizer.

    ``timeout`` (the collective timeout in seconds) is quoted in the hint added to
    a traceback that ends in a collective timeout.

    Exiting with ``os._exit`` skips interpreter teardown, which with live gloo
    threads can abort (TORCH-NOTES trap 1) and would turn exit status 1 into -6.
    """
    previous = sys.excepthook
    crash_dump.enable()  # a native crash (gloo abort, segfault) still says where it was

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            if not os.environ.get(LAUNCHED_BY_MIRRORFIT):
                previous(exc_type, exc, tb)
                return
            # Ctrl-C outside fit: the launcher says it once; no traceback per rank
            sys.stdout.flush()
            os._exit(INTERRUPTED_EXIT)
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        text += timeout_hint(text, timeout)
        _write_error_file(exc, text, rank)
        if not os.environ.get(LAUNCHED_BY_MIRRORFIT):
            labelled = "".join(f"[rank {rank}] {line}\n" for line in text.rstrip().split("\n"))
            sys.stderr.write(labelled)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)

    sys.excepthook = hook


def _write_error_file(exc: BaseException, text: str, rank: int) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    data = {"message": {"message": f"{type(exc).__name__}: {exc}",
                        "extraInfo": {"py_callstack": text, "timestamp": str(int(time.time()))}},
            "mirrorfit": {"time": time.time(), "rank": rank, "type": type(exc).__name__}}
    write_json_atomically(path, data)


def write_json_atomically(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` so that a reader sees no file or the whole of it: a
    temporary file, fsync, rename. The launcher kills the other workers the moment one
    fails; a worker killed half-way through its own error file used to leave a partial
    ``error.json`` that crashed torch elastic's agent with a JSONDecodeError."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as fp:
            json.dump(data, fp)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclass
class WorkerFailure:
    """What one worker's end looked like, as the launcher saw it."""

    rank: int
    exitcode: int
    traceback: str | None = None
    message: str | None = None
    time: float = float("inf")
    #: for a worker killed by a signal: where it was (see ``cluster.crash_dump``)
    note: str | None = None

    @property
    def secondary(self) -> bool:
        """True when this failure looks like a consequence of another rank's."""
        if self.exitcode == -signal.SIGTERM:
            return True
        text = (self.message or "") + (self.traceback or "")
        return any(marker in text for marker in _SECONDARY)

    def describe(self) -> str:
        if self.traceback:
            head = f"worker rank {self.rank} failed (exit code {self.exitcode}):"
            body = "".join(f"[rank {self.rank}] {line}\n"
                           for line in self.traceback.rstrip().split("\n"))
            return f"{head}\n{body}"
        if self.exitcode < 0:
            try:
                name = signal.Signals(-self.exitcode).name
            except ValueError:
                name = f"signal {-self.exitcode}"
            text = f"worker rank {self.rank} was killed by {name} (exit code {self.exitcode})."
            return f"{text[:-1]}: {self.note}" if self.note else text
        return (f"worker rank {self.rank} exited with code {self.exitcode} without raising a "
                "Python exception (os._exit, sys.exit from native code, or a crash).")


def failure_from_elastic(rank: int, failure: Any, error_file: str | None = None) -> WorkerFailure:
    """Build a WorkerFailure from torch elastic's ProcessFailure.

    Args:
        error_file: the worker's error file path as the agent gave it (torch's
            ProcessFailure names none when the worker wrote none, as after a signal).
    """
    out = WorkerFailure(rank=rank, exitcode=int(failure.exitcode))
    path = getattr(failure, "error_file", None)
    if out.exitcode < 0:
        out.note = crash_dump.describe(out.exitcode, error_file or path)
    if path and os.path.exists(path):
        try:
            with open(path) as fp:
                data = json.load(fp)
            out.traceback = data["message"]["extraInfo"]["py_callstack"]
            out.message = data["message"]["message"]
            out.time = float(data.get("mirrorfit", {}).get("time", failure.timestamp))
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return out


def root_cause(failures: list[WorkerFailure]) -> WorkerFailure:
    """The failure that started it: primary before secondary, then earliest."""
    return min(failures, key=lambda f: (f.secondary, f.time, f.rank))


def format_failures(failures: list[WorkerFailure], world_size: int) -> str:
    cause = root_cause(failures)
    others = world_size - 1
    tail = ("(the other worker was stopped)" if others == 1
            else f"(the other {others} workers were stopped)" if others else "")
    if cause.secondary and cause.exitcode != -signal.SIGTERM:
        tail = (f"mirrorfit: no worker reported an error of its own; rank {cause.rank} lost a "
                "peer that ended without one (sys.exit, os._exit(0), or a return on some ranks "
                f"only) while it waited in a collective.\n{tail}")
    return f"mirrorfit: {cause.describe().rstrip()}\n{tail}".rstrip() + "\n"
