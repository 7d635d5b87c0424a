"""``python job.py CONFIG`` (``jobs.PREEMPT_JOB``, 2 workers under mirrorfit's launcher)
run in the background, for the tests that signal a job."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.cluster.jobs import PREEMPT_JOB
from tests.faults.helpers import alive
from tests.procs import clean_env, write_script

PREEMPTED = re.compile(r"PREEMPTED rank=(\d) epoch=(\d+) step=(\d+)")


class Run:
    """One ``python job.py CONFIG`` in the background."""

    def __init__(self, tmp: Path, label: str, **cfg: object) -> None:
        self.dir = tmp / label
        self.dir.mkdir()
        self.cfg = {"devices": 2, "dir": str(self.dir), "out": str(self.dir / "w.npz"),
                    "backup": str(self.dir / "backup"), **cfg}
        self.script = write_script(tmp, PREEMPT_JOB, "job.py")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str] | None = None, **overrides: object) -> Run:
        """Start the job (again); ``overrides`` change its config, ``env`` its environment."""
        cfg = json.dumps({**self.cfg, **overrides})
        (self.dir / "ready").unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, str(self.script), cfg], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=clean_env(OMP_NUM_THREADS="1", **(env or {})))
        return self

    def alive_workers(self) -> list[int]:
        """The pids of this run's workers that still run (a zombie counts as gone)."""
        return [pid for pid in (self.pid(0), self.pid(1)) if alive(pid)]

    def wait_gone(self, seconds: float) -> float:
        """Seconds until no worker of this run is left; fails after ``seconds``."""
        start = time.monotonic()
        while self.alive_workers():
            assert time.monotonic() - start < seconds, f"workers left: {self.alive_workers()}"
            time.sleep(0.05)
        return time.monotonic() - start

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not (self.dir / "ready").exists():
            assert self.proc is not None and self.proc.poll() is None, self.finish()
            assert time.monotonic() < deadline, "the job never reached its ready step"
            time.sleep(0.05)

    def pid(self, rank: int) -> int:
        return int((self.dir / f"pid.{rank}").read_text())

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def weights(self) -> list[np.ndarray]:
        with np.load(self.dir / "w.npz") as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]


def stops(out: str) -> set[tuple[int, int]]:
    rows = [m.groups() for m in PREEMPTED.finditer(out)]
    assert sorted(int(r[0]) for r in rows) == [0, 1], out
    return {(int(e), int(s)) for _, e, s in rows}


