"""Where a worker was when native code killed it, and what that means.

A rank that dies inside C++ (gloo's ``EnforceNotMet`` on a collective mismatch, a
segfault) leaves no Python traceback and no error file: the launcher would only
see "killed by SIGABRT". Each worker therefore enables :mod:`faulthandler` into a
file beside its torch elastic error file (``crash.txt``); on SIGABRT, SIGSEGV,
SIGBUS, SIGFPE or SIGILL Python writes the stack of every thread there. The
launcher reads it for a worker that died of a signal and names the innermost
frame of the user's code, and, for an abort inside a collective, says that the
ranks disagreed on a collective and how to find the call (``MIRRORFIT_DEBUG=1``).
Workers ended with SIGKILL write nothing (it cannot be caught).
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal
from dataclasses import dataclass
from typing import IO

CRASH_FILE = "crash.txt"
#: turns on torch's collective checks in the workers (see process_group)
DEBUG_ENV = "MIRRORFIT_DEBUG"
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')
#: torch functions that run a collective (the DDP all-reduce runs inside backward)
_COLLECTIVE_FUNCS = frozenset({
    "all_reduce", "broadcast", "barrier", "all_gather", "all_gather_object",
    "broadcast_object_list", "reduce_scatter_tensor", "all_gather_into_tensor", "gather",
    "scatter", "reduce", "all_to_all", "monitored_barrier", "_engine_run_backward"})


_dump_file: IO[str] | None = None  # kept open for the life of the process


def enable(error_file: str | None = None) -> str | None:
    """Have Python write every thread's stack to ``crash.txt`` beside ``error_file``
    (default: ``TORCHELASTIC_ERROR_FILE``) if native code kills this process.
    Returns the path, or None outside torch elastic."""
    global _dump_file
    error_file = error_file or os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file:
        return None
    path = os.path.join(os.path.dirname(error_file), CRASH_FILE)
    try:
        if _dump_file is None or _dump_file.name != path:
            _dump_file = open(path, "w")  # noqa: SIM115 - must outlive this function
        faulthandler.enable(file=_dump_file, all_threads=True)
    except OSError:
        return None
    return path


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    func: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}, in {self.func}"


def read_main_stack(error_file: str | None) -> list[Frame]:
    """The stack (innermost first) of the thread that was running when the worker
    whose error file is ``error_file`` crashed; [] when nothing was dumped."""
    if not error_file:
        return []
    path = os.path.join(os.path.dirname(error_file), CRASH_FILE)
    try:
        with open(path, errors="replace") as fp:
            text = fp.read()
    except OSError:
        return []
    stacks = [(block.lstrip().startswith("Current thread"), _frames(block))
              for block in re.split(r"\n(?=(?:Current thread|Thread) 0x)", text)]
    stacks = [(current, frames) for current, frames in stacks if frames]
    if not stacks:
        return []
    # the thread that crashed if it runs Python, else the main thread (a native thread
    # such as gloo's aborted: the main thread is the one waiting in the collective)
    return max(stacks, key=lambda s: (s[0], s[1][-1].func == "<module>"))[1]


def _frames(block: str) -> list[Frame]:
    found = (_FRAME.match(raw) for raw in block.splitlines())
    return [Frame(m["file"], int(m["line"]), m["func"]) for m in found if m]


def describe(exitcode: int, error_file: str | None) -> str | None:
    """What the launcher adds for a worker killed by signal ``-exitcode``: where it
    was, and for an abort in a collective what probably happened. None when the
    worker left no dump."""
    frames = read_main_stack(error_file)
    if not frames:
        return None
    torch_dir, own_dir = _package_dir("torch"), _package_dir("mirrorfit")
    user = next((f for f in frames if not f.file.startswith((torch_dir, own_dir))), None)
    collective = next((f for f in frames if f.func in _COLLECTIVE_FUNCS
                       and f.file.startswith(torch_dir)), None)
    where = (f"{collective.func}, called from {user.file}, line {user.line}, in {user.func}"
             if collective and user else str(user or frames[0]))
    if collective is not None and exitcode == -signal.SIGABRT:
        return ("the ranks disagreed on a collective: this rank aborted inside the "
                f"communication library while in {where}. Every rank must make the same "
                "collective calls (reduce, barrier, broadcast, evaluate, a step) in the same "
                f"order; rerun with {DEBUG_ENV}=1 to have torch name the mismatched "
                "collectives.")
    return f"it was at {where}."


def _package_dir(name: str) -> str:
    """The folder of an imported package, with a trailing separator."""
    module = __import__(name)
    return os.path.dirname(os.path.abspath(module.__file__ or "")) + os.sep
