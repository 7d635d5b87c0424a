"""Preemption without SLURM: ``python job.py`` with 2 workers under mirrorfit's
launcher (``jobs.PREEMPT_JOB``).

- SIGTERM to one worker mid-training: both workers stop after the same step
  (the next multiple of 10), back up there and exit 0; the parent exits 0; no
  traceback; the code after ``fit`` does not run. Running the command again
  resumes at that step and ends with the weights of an uninterrupted run.
- SIGTERM to the parent (``kill PID`` of ``python job.py``), here with no
  BackupAndRestore callback: torch elastic's agent passes it to the workers, which
  stop at the same step; the chief prints one warning that nothing was saved and
  the next run starts from scratch (and nothing claiming a resume); the parent
  adds nothing and exits 143 (128 + SIGTERM).

The reference and the parent-signal run start alongside the interrupted run to
keep the wall time down. (~25 s on 2 cores)
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.cluster.runs import Run, stops

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(240)]

PREEMPTED = re.compile(r"PREEMPTED rank=(\d) epoch=(\d+) step=(\d+)")


@pytest.mark.slow  # test_interrupts.py covers the same path (Ctrl-C) and the parent's SIGTERM
def test_sigterm_to_one_worker_backs_up_both_and_resumes_exactly(tmp_path: Path) -> None:
    reference = Run(tmp_path, "reference").start()
    parent = Run(tmp_path, "parent", backup="").start(slow=True)
    run = Run(tmp_path, "worker").start(slow=True)

    run.wait_ready()
    os.kill(run.pid(1), signal.SIGTERM)
    parent.wait_ready()
    assert parent.proc is not None
    parent.proc.send_signal(signal.SIGTERM)

    code, out, err = run.finish()
    assert code == 0, err[-3000:]
    ((epoch, step),) = stops(out)  # the same step on both workers
    assert step % 10 == 0 and epoch * 60 + step >= 15, out
    assert out.count("mirrorfit: SIGTERM: stopped at") == 1, out
    assert f"training state backed up in {run.dir / 'backup'}; run the same command again " \
           "to resume" in out, out
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
    assert len(stops(out)) == 1 and "FIT DONE" not in out, out
    said = [line for line in (out + err).splitlines() if line.startswith("mirrorfit:")]
    assert said == [f"mirrorfit: warning: SIGTERM: stopped at epoch {epoch + 1}, step {step} "
                    "on every worker, but no BackupAndRestore callback saved the training "
                    "state: the next run starts from scratch (pass callbacks=[BackupAndRestore"
                    "(dir)] to fit to resume instead)" for (epoch, step) in stops(out)], said
    assert "Traceback" not in err, err[-3000:]
    assert not (parent.dir / "backup").exists()
