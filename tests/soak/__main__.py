"""Repeat real 2-worker jobs and count what went wrong (see ``tests/soak/__init__``).

- clean: ``jobs.PREEMPT_JOB`` to the end; fails if the exit status is not 0, if a
  worker aborted at exit (gloo's teardown abort, TORCH-NOTES trap 1) or if a
  worker is still running after the launcher returned;
- restarts: ``checkpoint.jobs.JOB`` with ``max_restarts=2``, rank 1 SIGKILLed after
  a random step; fails unless the final weights equal an uninterrupted run's bit
  for bit;
- launcher kills: ``kill -9`` of the launcher at a random step; fails if any worker
  is alive 5 s later.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tests.checkpoint.jobs import JOB
from tests.cluster.runs import Run
from tests.procs import run_python, write_script

ABORT_MARKS = ("terminate called", "Fatal Python error", "Aborted")
#: seconds from each launcher kill until no worker of that job was left
GONE_AFTER: list[float] = []


def clean(tmp: Path, i: int) -> str | None:
    run = Run(tmp, f"clean{i}").start()
    code, out, err = run.finish(timeout=180)
    if code != 0 or "FIT DONE" not in out:
        return f"exit {code}: {err.strip().splitlines()[-1:] if err.strip() else ''}"
    if any(mark in err for mark in ABORT_MARKS):
        return "abort at exit"
    if run.alive_workers():
        return f"workers left: {run.alive_workers()}"
    return None


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def _job(tmp: Path, label: str, **cfg: object) -> tuple[int, Path]:
    out = tmp / f"{label}.npz"
    full = {"devices": 2, "backup_dir": str(tmp / f"backup-{label}"), "out": str(out),
            "record": str(tmp / f"rec-{label}"), "label": label, "dropout": 0.1,
            "save_freq": 4, **cfg}
    res = run_python(write_script(tmp, JOB), json.dumps(full), timeout=240)
    return res.returncode, out


def restarts(tmp: Path, i: int, reference: list[np.ndarray]) -> str | None:
    step = random.randint(3, 30)
    code, out = _job(tmp, f"restart{i}", max_restarts=2,
                     kills=[{"attempt": 0, "rank": 1, "step": step, "how": "kill"}])
    if code != 0:
        return f"exit {code} (kill after step {step})"
    same = all(np.array_equal(a, b) for a, b in zip(_weights(out), reference, strict=True))
    return None if same else f"weights differ (kill after step {step})"


def launcher_kill(tmp: Path, i: int) -> str | None:
    run = Run(tmp, f"kill{i}", save_freq="epoch", ready=random.randint(10, 100),
              slow=True).start()
    run.wait_ready()
    assert run.proc is not None
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait()
    start = time.monotonic()
    while run.alive_workers() and time.monotonic() < start + 5.0:
        time.sleep(0.01)
    GONE_AFTER.append(time.monotonic() - start)
    left = run.alive_workers()
    for pid in left:  # do not let survivors disturb the next trials
        os.kill(pid, signal.SIGKILL)
    return f"survivors after 5 s: {left}" if left else None


def repeat(name: str, n: int, trial: Callable[[int], str | None],
           table: list[tuple[str, int, int, float, str]]) -> None:
    failures: list[str] = []
    start = time.monotonic()
    for i in range(n):
        problem = trial(i)
        if problem:
            failures.append(f"#{i}: {problem}")
        print(f"  {name} {i + 1}/{n}: {problem or 'ok'}", flush=True)
    took = time.monotonic() - start
    table.append((name, n, n - len(failures), took, "; ".join(failures[:3])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--clean", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--launcher-kills", type=int, default=20)
    args = parser.parse_args(argv)
    table: list[tuple[str, int, int, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="mirrorfit-soak-") as name:
        tmp = Path(name)
        repeat("clean 2-worker runs (exit 0, no abort, nothing left)", args.clean,
               lambda i: clean(tmp, i), table)
        if args.restarts:
            code, ref = _job(tmp, "reference")
            assert code == 0, "the uninterrupted reference failed"
            reference = _weights(ref)
            repeat("worker SIGKILL + automatic restart (bit-identical)", args.restarts,
                   lambda i: restarts(tmp, i, reference), table)
        repeat("launcher kill -9 (no worker alive after 5 s)", args.launcher_kills,
               lambda i: launcher_kill(tmp, i), table)
    print("\n| trial | runs | passed | minutes | failures |\n|---|---|---|---|---|")
    for name, n, ok, took, fails in table:
        print(f"| {name} | {n} | {ok} | {took / 60:.1f} | {fails or '-'} |")
    if GONE_AFTER:
        print(f"\nworkers gone after a launcher kill: max {max(GONE_AFTER):.2f} s, median "
              f"{sorted(GONE_AFTER)[len(GONE_AFTER) // 2]:.2f} s over {len(GONE_AFTER)} kills")
    return 0 if all(ok == n for _, n, ok, _, _ in table) else 1


if __name__ == "__main__":
    sys.exit(main())
