"""Workers die with the process that started them.

mirrorfit's launcher (torch elastic's agent, in the process the user started) runs
each worker in a session of its own, so a signal sent to the terminal's process
group reaches the launcher only, and the agent passes it on. But if the launcher
itself is killed with SIGKILL, nothing passes anything on: the workers used to
train to the end unsupervised, writing outputs and backups that a rerun shares.

On Linux each worker asks the kernel for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread polls the parent's pid
twice a second. Either way, a parent that died before this ran (the worker was
still importing torch) is noticed at once: the worker's parent pid is no longer
the launcher's.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping

#: the launcher's pid, set in every worker's environment
LAUNCHER_PID_ENV = "MIRRORFIT_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5


def die_with_parent(environ: Mapping[str, str] | None = None) -> str:
    """Arrange for this process to be killed when its parent dies; returns how
    ('prctl' or 'watchdog'). Kills this process now if the launcher is already gone."""
    env = os.environ if environ is None else environ
    expected = int(env.get(LAUNCHER_PID_ENV) or 0) or os.getppid()
    how = "prctl" if _set_pdeathsig() else _start_watchdog(expected)
    if os.getppid() != expected:  # the launcher died before the kernel was told
        _die()
    return how


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _start_watchdog(parent: int) -> str:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_POLL_S)
        _die()

    threading.Thread(target=watch, name="mirrorfit-parent-watch", daemon=True).start()
    return "watchdog"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
