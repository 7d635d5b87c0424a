"""Preemption and time limits: stop at an agreed step, back up, requeue, exit.

SLURM warns a job before its time limit with the signal of ``--signal=USR1@S``
(``mirrorfit slurm`` writes ``USR1@120``), and sends SIGTERM when it preempts or
cancels a job (then SIGKILL after ``KillWait``, 30 s by default). What a worker
does with them during ``fit``:

1. The handler only records the signal (a flag: nothing else is safe while a
   collective may be in flight). Workers receive signals at different moments.
2. ``fit`` all-reduces the flag (MAX) every :func:`check_interval` optimizer
   updates (default 10, ``MIRRORFIT_PREEMPTION_CHECK_STEPS``) and at each epoch
   end, so every worker stops after the same step. The per-step cost is one
   integer test; the all-reduce of one number happens every K updates.
3. Every callback with an ``on_preemption()`` method runs it there, on every
   worker (it returns True when it saved the training state):
   :class:`mirrorfit.callbacks.BackupAndRestore` backs up at that exact step and
   waits for the write. When none saved, the chief warns that nothing was.
4. The chief requeues the job (``scontrol requeue $SLURM_JOB_ID``) when it runs
   under SLURM and the job is running or ending at its time limit; not when a user
   cancels it (``scancel``), when SLURM requeues it itself, or with
   ``MIRRORFIT_REQUEUE=0`` (see :func:`requeue_job`). Elsewhere nothing is requeued.
5. Every worker raises :class:`Preempted`, a ``SystemExit`` with status 0: the
   code after ``fit`` does not run, no traceback is printed, the process group is
   left cleanly at exit (further USR1/SIGTERM, such as the SIGTERM SLURM sends on
   requeue, are ignored from step 3 on), and SLURM / torch elastic see a clean
   end. When the job runs again, BackupAndRestore resumes at the saved step.

Ctrl-C (SIGINT) during ``fit`` takes the same path (every worker stops after the
same step, BackupAndRestore saves, the chief prints one line saying where and how
to resume; never requeued) and the workers exit 130, as a shell reports Ctrl-C. A
second Ctrl-C ends the process at once, inside a collective or a write too (the
previous backup stays intact: writes are atomic).

Outside ``fit`` the handlers keep USR1 for the next ``fit`` (a warning during
set-up is acted on at its first check) and give SIGTERM and SIGINT their previous
meaning (by default: end the process; KeyboardInterrupt), so a job cancelled after
training still ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any, NoReturn, Protocol

from mirrorfit.cluster.local import interactive_session


class Collectives(Protocol):
    """What preemption needs of a strategy (``mirrorfit.strategies.Strategy`` has it)."""

    @property
    def is_chief(self) -> bool: ...
    def reduce(self, value: float, op: str = "mean") -> Any: ...
    def broadcast_object(self, obj: Any, src: int = 0) -> Any: ...


class Position(Protocol):
    """Where training stands (``mirrorfit.trainer.context.TrainingContext`` has it)."""

    @property
    def strategy(self) -> Collectives: ...
    @property
    def epoch(self) -> int: ...
    @property
    def step(self) -> int: ...

__all__ = [
    "CHECK_ENV",
    "DEFAULT_CHECK_STEPS",
    "REQUEUE_ENV",
    "Preempted",
    "check_interval",
    "install",
    "requested",
    "requeue_job",
    "uninstall",
    "watch",
]

#: optimizer updates between two agreements on a stop (overridden by CHECK_ENV)
DEFAULT_CHECK_STEPS = 10
CHECK_ENV = "MIRRORFIT_PREEMPTION_CHECK_STEPS"
#: set to 0 to save and exit without requeueing under SLURM
REQUEUE_ENV = "MIRRORFIT_REQUEUE"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
#: which signal wins when workers received different ones: the user's Ctrl-C, then
#: SIGTERM (a preemption or a cancel), then SLURM's time-limit warning
_PRIORITY = {signal.SIGUSR1: 1, signal.SIGTERM: 2, signal.SIGINT: 3}
#: exit status after Ctrl-C, 128 + SIGINT as a shell reports it
INTERRUPTED_EXIT = 130
#: job states of a job SLURM requeues itself, and of one it is ending (scancel shows
#: COMPLETING with Reason=None, a time limit COMPLETING with Reason=TimeLimit)
_REQUEUED = frozenset({"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"})
_ENDING = frozenset({"COMPLETING", "CANCELLED", "PREEMPTED", "TIMEOUT", "COMPLETED", "FAILED",
                     "NODE_FAIL", "DEADLINE"})

_requested: int | None = None  # the first signal received (USR1 or TERM)
_agreed = 0  # the signal every worker agreed on (0: none yet)
_stopping = False  # preempt() has begun: this process is on its way out
_previous: dict[int, Any] = {}  # handlers replaced by install()
_watching = 0  # fits running in this process


class Preempted(SystemExit):
    """Raised on every worker when ``fit`` stops for a preemption signal.

    A ``SystemExit`` with status 0: the script ends without a traceback and
    without running the code after ``fit``; ``except Exception`` does not catch
    it. Attributes: ``signal_name`` ('SIGUSR1', 'SIGTERM'), ``epoch`` and
    ``step`` (where training stopped), ``requeued``.
    """

    def __init__(self, signal_name: str, epoch: int, step: int, requeued: bool) -> None:
        super().__init__(INTERRUPTED_EXIT if signal_name == "SIGINT" else 0)
        self.signal_name, self.epoch, self.step, self.requeued = signal_name, epoch, step, requeued


def install() -> bool:
    """Record SIGUSR1, SIGTERM and (in a script) SIGINT in this process from now on
    (idempotent).

    Returns False (and changes nothing) outside the main thread, where Python
    cannot install signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        # in a notebook or a REPL Ctrl-C stays KeyboardInterrupt: stop fit at once and
        # keep the session (a script ends with exit 130 after backing up instead); an
        # ignored SIGINT stays ignored, as Python leaves it (a shell's background job,
        # `cmd &` in a batch script: Ctrl-C at the terminal is not meant for it)
        if sig == signal.SIGINT and (interactive_session()
                                     or signal.getsignal(sig) == signal.SIG_IGN):
            continue
        if sig not in _previous:
            _previous[sig] = signal.signal(sig, _handler)
    return True


def uninstall() -> None:
    """Put back the handlers :func:`install` replaced and forget any signal (tests)."""
    for sig, previous in _previous.items():
        signal.signal(sig, previous)
    _previous.clear()
    clear()


def _handler(signum: int, frame: FrameType | None) -> None:
    global _requested
    if signum == signal.SIGINT and _watching and (_stopping or _requested == signal.SIGINT):
        _stop_now()  # a second Ctrl-C: no waiting for the agreed step or the backup
    if _stopping:  # e.g. the SIGTERM SLURM sends on requeue: let the clean exit finish
        return
    if signum in (signal.SIGTERM, signal.SIGINT) and not _watching:  # outside fit: as before
        previous = _previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # ends the process as if never installed
        return
    if _requested is None:
        _requested = signum


def _stop_now() -> None:
    """End this process at once, as an unhandled SIGINT would (even inside a collective
    or a write, where a Python exception would wait for the native call to return)."""
    sys.stdout.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def requested() -> str | None:
    """The name of the signal this process received ('SIGUSR1'...), or None."""
    return None if _requested is None else signal.Signals(_requested).name


def clear() -> None:
    """Forget a received signal (tests)."""
    global _requested, _agreed, _stopping
    _requested, _agreed, _stopping = None, 0, False


@contextlib.contextmanager
def watch() -> Iterator[None]:
    """Inside, SIGTERM is recorded for ``fit`` to act on (handlers installed if needed)."""
    global _watching
    install()
    _watching += 1
    try:
        yield
    finally:
        _watching -= 1


def check_interval(strategy: Collectives, environ: Mapping[str, str] | None = None) -> int:
    """Optimizer updates between two agreements: ``MIRRORFIT_PREEMPTION_CHECK_STEPS``,
    else 10; the chief's value, so workers never disagree on when to reduce.

    Raises:
        ValueError: a value that is not a positive integer.
    """
    env = os.environ if environ is None else environ
    # share the chief's text before checking it, so every worker fails (or not) alike
    text = str(strategy.broadcast_object(env.get(CHECK_ENV, "")))
    try:
        value = int(text) if text else DEFAULT_CHECK_STEPS
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{CHECK_ENV} must be a positive number of optimizer updates, "
                         f"received {text!r}; e.g. {CHECK_ENV}=10.")
    return value


def agreed(strategy: Collectives) -> bool:
    """Collective: True on every worker when any worker received a signal (which one
    is then known everywhere: SIGINT over SIGTERM over SIGUSR1, see ``_PRIORITY``)."""
    global _agreed
    mine = _PRIORITY.get(signal.Signals(_requested), 0) if _requested else 0
    best = int(strategy.reduce(float(mine), "max"))
    _agreed = next((int(sig) for sig, p in _PRIORITY.items() if p == best), 0)
    return _agreed != 0


def preempt(position: Position, callbacks: Any) -> NoReturn:
    """Collective, at the agreed step: ``on_preemption()`` callbacks, then (chief)
    the requeue, then :class:`Preempted` on every worker.

    From here on this process ignores USR1 and SIGTERM (a requeue makes SLURM send
    SIGTERM at once; a second SIGINT still ends it at once), so the backup and the
    group's teardown at exit complete; a process that hangs still gets SLURM's
    SIGKILL after KillWait.
    """
    global _stopping
    _stopping = True
    strategy = position.strategy
    epoch, step = position.epoch, position.step
    hooks = [cb.on_preemption for cb in callbacks
             if callable(getattr(cb, "on_preemption", None))]
    saved = any([hook() for hook in hooks])  # a list: every hook runs (they are collective)
    name = signal.Signals(_agreed).name if _agreed else (requested() or "a signal")
    requeued = False
    if strategy.is_chief:
        requeued, note = (False, "") if name == "SIGINT" else requeue_job()
        stream, line = stop_line(name, f"epoch {epoch + 1}, step {step}", saved, note,
                                 _backup_dirs(callbacks))
        print(line, file=stream, flush=True)
    sys.stdout.flush()
    raise Preempted(name, epoch, step, requeued)


def stop_line(name: str, where: str, saved: bool, note: str,
              backups: list[str]) -> tuple[Any, str]:
    """The one line (and its stream) the chief prints where ``fit`` stopped for signal
    ``name``: stdout when the state was saved, stderr (a warning) when it was not."""
    what = (f"interrupted ({name}, Ctrl-C) at {where} on every worker" if name == "SIGINT"
            else f"{name}: stopped at {where} on every worker")
    if note.startswith("not a SLURM job"):
        note = ""  # nothing was requeued: said below
    if not saved:
        return sys.stderr, (
            f"mirrorfit: warning: {what}, but no BackupAndRestore callback saved the training "
            "state: the next run starts from scratch (pass callbacks=[BackupAndRestore(dir)] "
            "to fit to resume instead)" + (f"; {note}" if note else ""))
    place = f" in {', '.join(backups)}" if backups else ""
    note = note or "run the same command again to resume"
    return sys.stdout, f"mirrorfit: {what}; training state backed up{place}; {note}"


def _backup_dirs(callbacks: Any) -> list[str]:
    return [str(d) for cb in callbacks if (d := getattr(cb, "backup_dir", None))]


def requeue_job(environ: Mapping[str, str] | None = None,
                scontrol: str = "scontrol") -> tuple[bool, str]:
    """Requeue this SLURM job (``scontrol requeue``); (done, what happened).

    The job's state decides (``scontrol show job``): a running job (USR1 before
    the limit, a preemption's grace period) and one ending at its time limit
    (``COMPLETING``, ``Reason=TimeLimit``) are requeued; one that is ending for
    another reason (``scancel``: ``COMPLETING``, ``Reason=None``) is not, nor one
    SLURM requeues itself (``PENDING``, ``REQUEUED``). Nothing is done outside a
    SLURM job or with ``MIRRORFIT_REQUEUE=0``. A failing ``scontrol`` is reported
    in the text, never raised: the state is saved either way and the worker exits.
    Array jobs requeue their own task (``ARRAYJOB_TASK``).
    """
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID", "")
    if not job:
        return False, "not a SLURM job: run the same command again to resume"
    if env.get(REQUEUE_ENV, "1") == "0":
        return False, f"{REQUEUE_ENV}=0: not requeued"
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    try:
        fields = _job_fields(job, scontrol)
        state, reason = fields.get("JobState", ""), fields.get("Reason", "")
        if state in _REQUEUED:
            return False, f"SLURM already requeued it (state {state}): not requeued again"
        if state in _ENDING and reason != "TimeLimit":
            return False, (f"the job is being cancelled (state {state}, Reason={reason}: "
                           "scancel or preemption): not requeued")
        proc = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"could not requeue job {job}: {exc}"
    if proc.returncode != 0:
        return False, (f"`scontrol requeue {job}` failed (exit {proc.returncode}): "
                       f"{proc.stderr.strip()}; submit the job again to resume")
    return True, f"requeued SLURM job {job}"


def _job_fields(job: str, scontrol: str) -> dict[str, str]:
    """The ``KEY=VALUE`` fields of ``scontrol show job -o JOB`` ({} when unreadable)."""
    proc = subprocess.run([scontrol, "show", "job", "-o", job], capture_output=True,
                          text=True, timeout=60, check=False)
    fields: dict[str, str] = {}
    for token in proc.stdout.split():
        key, eq, value = token.partition("=")
        if eq:
            fields.setdefault(key, value)
    return fields
