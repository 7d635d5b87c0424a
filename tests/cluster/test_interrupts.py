"""Signals to the process the user started (``python job.py``, 2 workers under
mirrorfit's launcher, ``jobs.PREEMPT_JOB``), as a terminal or a user sends them.

The workers run in sessions of their own (torch elastic starts them so), so a
terminal's Ctrl-C or hang-up reaches the launcher only, which passes it on. Here:

- ``kill -9`` of the launcher: no worker survives it by more than 5 s (they used to
  train on unsupervised, writing and deleting backups); the same command again
  resumes from the last backup;
- Ctrl-C: every worker stops after the same step, backs up, the chief prints one
  line (where, the backup, how to resume), exit 130, no traceback; the same
  command again ends with the weights of an uninterrupted run, bit for bit;
- a second Ctrl-C ends everything at once (within 2 s), exit 130;
- SIGHUP (the terminal closed): every worker gone within 5 s; MASTER_ADDR and
  MASTER_PORT in the environment are said to be ignored, once;
- SIGTERM to the launcher of a job without BackupAndRestore: every worker stops at
  the same step and the chief says, once, that the next run starts from scratch.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from mirrorfit.cluster.preemption import CHECK_ENV
from tests.cluster.runs import Run, stops

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]

GONE_WITHIN_S = 5.0


def test_kill_9_then_ctrl_c_then_the_same_command_ends_as_uninterrupted(tmp_path: Path) -> None:
    reference = Run(tmp_path, "reference").start()
    run = Run(tmp_path, "run", save_freq="epoch", ready=75, slow=True).start()
    backup = run.dir / "backup"

    run.wait_ready()  # epoch 2, step 15: the backup of epoch 1 is on disk
    assert run.proc is not None
    run.proc.kill()
    run.wait_gone(GONE_WITHIN_S)
    saved = (backup / "backup.pt").stat().st_mtime_ns
    time.sleep(1.0)  # nobody writes or deletes the backup any more
    assert (backup / "backup.pt").stat().st_mtime_ns == saved

    run.start()
    run.wait_ready()
    run.proc.send_signal(signal.SIGINT)
    code, out, err = run.finish()
    assert code == 130, (code, err[-3000:])
    assert "resuming from" in out, out
    ((epoch, step),) = stops(out)  # the same step on both workers
    line = (f"mirrorfit: interrupted (SIGINT, Ctrl-C) at epoch {epoch + 1}, step {step} on "
            f"every worker; training state backed up in {backup}; run the same command again "
            "to resume")
    assert out.count(line) == 1, out
    assert "mirrorfit" not in err and "Traceback" not in err, err[-3000:]

    code, out, err = run.start(slow=False).finish()
    assert code == 0 and "FIT DONE" in out, err[-3000:]
    assert f"at epoch {epoch + 1}, step {step}" in out, out
    code, ref_out, err = reference.finish()
    assert code == 0 and "FIT DONE" in ref_out, err[-3000:]
    for a, b in zip(run.weights(), reference.weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_second_ctrl_c_hang_up_and_sigterm_without_backup(tmp_path: Path) -> None:
    # the first Ctrl-C waits for the next agreement (here the epoch's end, 4.5 s away)
    double = Run(tmp_path, "double", slow=True).start(env={CHECK_ENV: "1000"})
    hang_up = Run(tmp_path, "hang_up", slow=True).start(
        env={"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    term = Run(tmp_path, "term", backup="", slow=True).start()

    double.wait_ready()
    assert double.proc is not None
    double.proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    double.proc.send_signal(signal.SIGINT)
    double.wait_gone(2.0)
    code, out, err = double.finish()
    assert code == 130, (code, err[-3000:])
    assert "FIT DONE" not in out and "Traceback" not in err, err[-3000:]

    hang_up.wait_ready()
    assert hang_up.proc is not None
    hang_up.proc.send_signal(signal.SIGHUP)
    hang_up.wait_gone(GONE_WITHIN_S)
    code, out, err = hang_up.finish()
    assert code == 128 + signal.SIGHUP, (code, err[-3000:])
    assert err.count("MASTER_ADDR=10.0.0.1 and MASTER_PORT=29500 ignored") == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]

    # SIGTERM to the parent, no BackupAndRestore: one warning, true (nothing about resuming)
    term.wait_ready()
    assert term.proc is not None
    term.proc.send_signal(signal.SIGTERM)
    code, out, err = term.finish()
    assert code == 128 + signal.SIGTERM, (code, err[-3000:])
    ((epoch, step),) = stops(out)
    said = [line for line in (out + err).splitlines() if line.startswith("mirrorfit:")]
    assert said == [f"mirrorfit: warning: SIGTERM: stopped at epoch {epoch + 1}, step {step} "
                    "on every worker, but no BackupAndRestore callback saved the training "
                    "state: the next run starts from scratch (pass callbacks=[BackupAndRestore"
                    "(dir)] to fit to resume instead)"], said
    assert "Traceback" not in err and "FIT DONE" not in out, err[-3000:]
