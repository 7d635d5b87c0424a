"""Fault tolerance with real processes: kill -9 a worker, kill the writer mid-save,
restart automatically, resume on another replica count.

Every run trains the same job (``jobs.JOB``: 203 samples, global batch 20, 11
steps per epoch, 3 epochs, Adam, a backup every 4 steps). Launches are grouped:
two references, one 2-worker run that is killed twice and restarts itself, and
one interrupted run per replica count whose backup is resumed on another
(1 -> 2, 2 -> 1, 2 -> 4).
"""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest

from tests.checkpoint.jobs import JOB
from tests.procs import run_python, write_script

pytestmark = pytest.mark.multiprocess

STEPS, EPOCHS, N, SAVE_FREQ = 11, 3, 203, 4
RNG = random.Random()  # the steps are drawn per session and shown on failure


class Job:
    def __init__(self, tmp, label, **cfg):
        self.tmp, self.label = tmp, label
        self.out = tmp / f"{label}.npz"
        self.record = tmp / f"rec-{label}"
        self.cfg = {"backup_dir": str(tmp / f"backup-{label}"), "out": str(self.out),
                    "record": str(self.record), "label": label, "dropout": 0.0,
                    "save_freq": SAVE_FREQ, **cfg}

    def run(self, timeout=150, **overrides):
        script = write_script(self.tmp, JOB)
        return run_python(script, json.dumps({**self.cfg, **overrides}), timeout=timeout)

    def weights(self):
        with np.load(self.out) as f:
            return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]

    def rows(self, ranks):
        """(attempt, global step, indices) of every training forward, in log order."""
        out = []
        for r in ranks:
            for line in (self.record.parent / f"{self.record.name}.{r}").read_text().splitlines():
                _, attempt, epoch, step, idx = json.loads(line)
                out.append((attempt, epoch * STEPS + step, idx))
        return out


def _ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _close(a, b, atol=1e-5):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True)) <= atol


def _effective_epochs(rows):
    """Indices each epoch trained on, counting an attempt only up to where the next
    one resumed (what it did after its last backup was rolled back)."""
    starts = {}
    for attempt, g, _ in rows:
        starts[attempt] = min(starts.get(attempt, g), g)
    epochs = {}
    for attempt, g, idx in rows:
        if attempt + 1 in starts and g >= starts[attempt + 1]:
            continue
        epochs.setdefault(g // STEPS, []).extend(idx)
    return starts, {e: sorted(v) for e, v in epochs.items()}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("fault")


@pytest.fixture(scope="module")
def ref_one(tmp):
    """Uninterrupted, 1 process, no dropout."""
    job = Job(tmp, "ref1", devices=1)
    _ok(job.run())
    return job.weights()


def test_two_workers_restart_after_kill_9_and_after_a_killed_save(tmp):
    """Attempt 0: rank 1 is SIGKILLed after step k1. Attempt 1: the chief is
    SIGKILLed halfway through the first backup write after step k2. Attempt 2
    finishes. Weights equal an uninterrupted 2-worker run's bit for bit."""
    k1 = RNG.randint(5, 18)
    k2 = RNG.randint(k1 + 1, 28)
    msg = f"k1={k1}, k2={k2}"
    ref = Job(tmp, "ref2", devices=2, dropout=0.1)
    _ok(ref.run())
    job = Job(tmp, "restarts", devices=2, dropout=0.1, max_restarts=2,
              kills=[{"attempt": 0, "rank": 1, "step": k1, "how": "kill"},
                     {"attempt": 1, "rank": 0, "step": k2, "how": "save"}])
    res = _ok(job.run(timeout=240))
    assert _equal(job.weights(), ref.weights()), msg
    # the log says which restart this is and why
    assert ("mirrorfit: restart 1/2 (previous attempt: worker rank 1 was killed by SIGKILL"
            in res.stderr), res.stderr
    assert ("mirrorfit: restart 2/2 (previous attempt: worker rank 0 was killed by SIGKILL"
            in res.stderr), res.stderr
    assert res.stdout.count(", restart 1/2") == 1 and res.stdout.count(", restart 2/2") == 1
    # attempt 1 resumed at the last backup before the kill; attempt 2 at the last one
    # before the killed save (the half-written file was never used)
    starts, epochs = _effective_epochs(job.rows([0, 1]))
    crashed_save = -(-k2 // SAVE_FREQ) * SAVE_FREQ
    assert starts == {0: 0, 1: (k1 - 1) // SAVE_FREQ * SAVE_FREQ,
                      2: crashed_save - SAVE_FREQ}, msg
    # every sample of every epoch trained on exactly once, across the three attempts
    assert epochs == {e: list(range(N)) for e in range(EPOCHS)}, msg
    histories = [line["history"] for line in res.json_lines()]
    assert len(histories) == 2 and histories[0] == histories[1]
    assert not (tmp / "backup-restarts").exists()  # deleted once training completed


@pytest.mark.slow  # `pytest -m slow` runs it
def test_single_process_kill_9_resumes_bit_for_bit_and_on_two_workers(tmp, ref_one):
    """1 process killed after step k; its backup resumes in 1 process (bit for bit)
    and, copied, in 2 workers (within 1e-5)."""
    k = RNG.randint(5, 30)
    job = Job(tmp, "one", devices=1, kills=[{"attempt": 0, "rank": 0, "step": k,
                                             "how": "kill"}])
    killed = job.run()
    assert killed.returncode == -9, killed.stderr[-2000:]
    shutil.copytree(tmp / "backup-one", tmp / "backup-one-to-two")
    _ok(job.run(run=1))
    assert _equal(job.weights(), ref_one), f"k={k}"
    starts, epochs = _effective_epochs(job.rows([0]))
    assert starts == {0: 0, 1: (k - 1) // SAVE_FREQ * SAVE_FREQ}, f"k={k}"
    assert epochs == {e: list(range(N)) for e in range(EPOCHS)}, f"k={k}"
    two = Job(tmp, "one-to-two", devices=2)
    res = _ok(two.run())
    assert "(saved by 1 worker(s), now 2)" in res.stdout
    assert _close(two.weights(), ref_one), f"k={k}"


def test_two_workers_killed_without_restarts_resume_on_one_process_and_on_four(tmp, ref_one):
    """2 workers killed after step k; the backup resumes in 1 process and, copied, in 4
    workers (the last global batch of 3 leaves one of the 4 shares empty)."""
    k = RNG.randint(5, 30)
    job = Job(tmp, "two-to-one", devices=2, kills=[{"attempt": 0, "rank": 1, "step": k,
                                                    "how": "kill"}])
    failed = job.run()
    assert failed.returncode != 0
    assert "worker rank 1 was killed by SIGKILL" in failed.stderr
    shutil.copytree(tmp / "backup-two-to-one", tmp / "backup-two-to-four")
    res = _ok(job.run(devices=1, run=1))
    assert "(saved by 2 worker(s), now 1)" in res.stdout
    assert _close(job.weights(), ref_one), f"k={k}"
    four = Job(tmp, "two-to-four", devices=4)
    res = _ok(four.run(timeout=240))
    assert "(saved by 2 worker(s), now 4)" in res.stdout
    assert _close(four.weights(), ref_one), f"k={k}"
    # each epoch's last global batch holds 3 samples: rank 3's share is empty, and its
    # forward on a weightless stand-in sample is not training on a sample
    rows = four.rows([0, 1, 2]) + [r for r in four.rows([3]) if r[1] % STEPS != STEPS - 1]
    starts, epochs = _effective_epochs(rows)
    start = (k - 1) // SAVE_FREQ * SAVE_FREQ
    assert starts == {0: start}, f"k={k}"
    assert {e: v for e, v in epochs.items() if e > start // STEPS} == {
        e: list(range(N)) for e in range(start // STEPS + 1, EPOCHS)}, f"k={k}"
