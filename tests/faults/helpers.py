"""Run a fault job, measure how long its workers outlived the fault, check the output."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import Result, clean_env, run_python, write_script

#: the bound the issue states: every worker gone this long after the fault
GONE_WITHIN_S = 30.0
_EXCEPTION_LINE = re.compile(r"^(?:\[rank \d+\] )?([A-Za-z_][\w.]*(?:Error|Exception): .*)$")
#: outer limit for one job, so a hang fails the test rather than the suite
JOB_TIMEOUT_S = 120.0


@dataclass
class Outcome:
    """A finished job: its output, when the fault happened and when the job was over."""

    result: Result
    ended_at: float
    fault_at: float | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def seconds_to_gone(self) -> float | None:
        """From the first injected fault to the end of the job (all workers reaped)."""
        return None if self.fault_at is None else self.ended_at - self.fault_at

    def lines(self) -> list[dict]:
        return self.result.json_lines()


def run_job(tmp_path: Path, body: str, *args: str, timeout: float = JOB_TIMEOUT_S,
            **env: str) -> Outcome:
    """Write ``body`` to a script, run it with ``args``, collect pids and fault times."""
    script = write_script(tmp_path, body)
    res = run_python(script, *args, timeout=timeout, cwd=tmp_path, env=clean_env(**env))
    ended = time.time()
    lines = res.json_lines()
    marks = [line["fault_at"] for line in lines if "fault_at" in line]
    pids = [line["pid"] for line in lines if "pid" in line]
    return Outcome(res, ended, min(marks) if marks else None, pids)


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as fp:
            state = next(line for line in fp if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return False
    return "Z" not in state.split()[1]


def assert_workers_gone(out: Outcome, workers: int = 2) -> None:
    """Every worker reported its pid, none is left, and the job ended in time."""
    assert len(out.pids) == workers, (out.result.stdout, out.stderr[-3000:])
    left = [p for p in out.pids if p != os.getpid() and alive(p)]
    assert not left, f"workers still running after the job ended: {left}"
    assert out.seconds_to_gone is not None, "the job never reached its fault"
    assert out.seconds_to_gone < GONE_WITHIN_S, out.seconds_to_gone


def assert_one_error(out: Outcome, rank: int, message: str, *, traceback: bool = True) -> None:
    """Non-zero status; ``message`` shown once, labelled with ``rank``; no traceback soup."""
    err = out.stderr
    assert out.result.returncode != 0, err[-3000:]
    assert not any(line.get("finished") for line in out.lines())
    assert err.count(message) == 1, err[-4000:]
    assert err.count("Traceback (most recent call last)") == (1 if traceback else 0), err[-4000:]
    assert f"worker rank {rank} " in err, err[-3000:]
    if traceback:
        assert f"[rank {rank}] " in err
        assert f"[rank {1 - rank}] " not in err, "another rank's output was printed too"
    assert "Connection closed by peer" not in err, "a consequence was shown, not the cause"


def headline(out: Outcome) -> str:
    """What a user reads first: the launcher's 'mirrorfit: ...' line and the exception line."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    head = next((line[len("mirrorfit: "):] for line in lines if line.startswith("mirrorfit: ")),
                lines[-1] if lines else "")
    errors = [m.group(1) for line in lines if (m := _EXCEPTION_LINE.match(line))]
    return f"{head} {errors[-1]}" if errors and errors[-1] not in head else head
