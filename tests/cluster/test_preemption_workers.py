"""Preemption without SLURM: ``python job.py`` with 2 workers under mirrorfit's
launcher (``jobs.PREEMPT_JOB``).

- SIGTERM to one worker mid-training: both workers stop after the same step
  (the next multiple of 10), back up there and exit 0; the parent exits 0; no
  traceback; the code after ``fit`` does not run. Running the command again
  resumes at that step and ends with the weights of an uninterrupted run.
- SIGTERM to the parent (``kill PID`` of ``python job.py``): torch elastic's agent
  passes it to the workers, which back up the same way; the parent prints one
  line and exits 143 (128 + SIGTERM).

The reference and the parent-signal run start alongside the interrupted run to
keep the wall time down. (~25 s on 2 cores)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cluster.jobs import PREEMPT_JOB
from tests.procs import clean_env, write_script

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

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

    def start(self, **overrides: object) -> Run:
        cfg = json.dumps({**self.cfg, **overrides})
        self.proc = subprocess.Popen([sys.executable, str(self.script), cfg], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=clean_env(OMP_NUM_THREADS="1"))
        return self

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


def _stops(out: str) -> set[tuple[int, int]]:
    rows = [m.groups() for m in PREEMPTED.finditer(out)]
    assert sorted(int(r[0]) for r in rows) == [0, 1], out
    return {(int(e), int(s)) for _, e, s in rows}


def test_sigterm_to_one_worker_backs_up_both_and_resumes_exactly(tmp_path: Path) -> None:
    reference = Run(tmp_path, "reference").start()
    parent = Run(tmp_path, "parent").start(slow=True)
    run = Run(tmp_path, "worker").start(slow=True)

    run.wait_ready()
    os.kill(run.pid(1), signal.SIGTERM)
    parent.wait_ready()
    assert parent.proc is not None
    parent.proc.send_signal(signal.SIGTERM)

    code, out, err = run.finish()
    assert code == 0, err[-3000:]
    ((epoch, step),) = _stops(out)  # the same step on both workers
    assert step % 10 == 0 and epoch * 60 + step >= 15, out
    assert "mirrorfit: SIGTERM: stopped at" in out and "training state backed up" in out
    assert "FIT DONE" not in out and "Traceback" not in err, err[-3000:]
    assert (run.dir / "backup" / "backup.pt").is_file()

    code, out, err = run.start().finish()  # the same command again
    assert code == 0, err[-3000:]
    assert f"resuming from {run.dir / 'backup' / 'backup.pt'} at epoch {epoch + 1}, " \
           f"step {step}" in out, out
    code, ref_out, err = reference.finish()
    assert code == 0 and "FIT DONE" in ref_out, err[-3000:]
    for a, b in zip(run.weights(), reference.weights(), strict=True):
        assert float(np.abs(a - b).max()) <= 1e-6

    code, out, err = parent.finish()
    assert code == 128 + signal.SIGTERM, (code, err[-3000:])
    assert len(_stops(out)) == 1 and "FIT DONE" not in out, out
    assert "mirrorfit: SIGTERM received; the workers were stopped" in err
    assert "Traceback" not in err, err[-3000:]
    assert (parent.dir / "backup" / "backup.pt").is_file()
