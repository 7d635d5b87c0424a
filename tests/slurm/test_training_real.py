"""Training jobs on the real one-node SLURM, submitted with ``mirrorfit slurm --submit``.

- The MNIST example on 2 tasks completes and shows 2 replicas and a test accuracy.
- Preemption (issue 7): USR1 (what ``--signal=USR1@S`` sends before the time limit)
  mid-training -> both tasks stop after the same step, BackupAndRestore backs up
  there, the chief requeues -> the job comes back (SLURM_RESTART_COUNT=1),
  resumes at that step and ends with the weights of an uninterrupted job.
- ``scancel`` mid-training (SIGTERM, job COMPLETING): the tasks back up and exit,
  and the job is *not* requeued: a user's cancel stays a cancel.

The uninterrupted reference runs alongside the preempted job. (~60 s together on 2
busy cores; see docs/slurm.md for measured times)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.cluster.jobs import PREEMPT_JOB
from tests.slurm.test_sbatch_real import _master_addr_args

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist_mlp.py"
PREEMPTED = re.compile(r"PREEMPTED rank=(\d) epoch=(\d+) step=(\d+)")


def _submit(cluster, tmp: Path, name: str, script: Path, *args: str) -> int:
    return cluster.submit(["--ntasks-per-node", "2", "--job-name", name, "--time", "10",
                           *_master_addr_args(), "--script-file", str(tmp / f"{name}.sbatch"),
                           str(script), *args], cwd=tmp)


def _wait_for(path: Path, cluster, job_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        state = cluster.job_info(job_id).get("JobState")
        assert state in ("PENDING", "RUNNING"), f"job {job_id} ended early: {state}"
        if time.monotonic() > deadline:
            cluster.cancel(job_id)
            raise AssertionError(f"job {job_id} never created {path}")
        time.sleep(0.1)


def _stop(output: str) -> tuple[int, int]:
    """The (epoch, step) both ranks stopped at; asserts they agree."""
    rows = PREEMPTED.findall(output)
    assert sorted(int(r[0]) for r in rows) == [0, 1], output
    stops = {(int(e), int(s)) for _, e, s in rows}
    assert len(stops) == 1, output
    return stops.pop()


@pytest.mark.slow  # the requeue test trains on two SLURM tasks too
def test_mnist_example_on_two_tasks(slurm_cluster, tmp_path: Path) -> None:
    """(~25 s)"""
    job_id = _submit(slurm_cluster, tmp_path, "mf-mnist", EXAMPLE, "--devices", "2",
                     "--train-samples", "3000", "--epochs", "1")
    result = slurm_cluster.wait(job_id, timeout=240)

    assert (result.state, result.exit_code) == ("COMPLETED", 0), result.output
    assert "Number of devices: 2" in result.output, result.output
    assert re.search(r"test loss: [0-9.]+ - test accuracy: 0\.[5-9][0-9]*", result.output), \
        result.output


def _job(tmp: Path, label: str, **cfg: object) -> tuple[Path, str]:
    folder = tmp / label
    folder.mkdir()
    script = tmp / "preempt_job.py"
    script.write_text(PREEMPT_JOB)
    config = {"devices": 2, "dir": str(folder), "out": str(folder / "w.npz"),
              "backup": str(folder / "backup"), **cfg}
    return folder, json.dumps(config)


def test_usr1_requeues_resumes_and_ends_with_uninterrupted_weights(slurm_cluster,
                                                                   tmp_path: Path) -> None:
    """(~35 s)"""
    ref_dir, ref_cfg = _job(tmp_path, "reference")
    run_dir, run_cfg = _job(tmp_path, "preempted", slow=True)
    script = tmp_path / "preempt_job.py"
    reference = _submit(slurm_cluster, tmp_path, "mf-reference", script, ref_cfg)
    job_id = _submit(slurm_cluster, tmp_path, "mf-preempt", script, run_cfg)

    _wait_for(run_dir / "ready", slurm_cluster, job_id)
    slurm_cluster.signal(job_id, "USR1", batch=False)  # as --signal=USR1@S does
    slurm_cluster.wait_for_state(job_id, {"PENDING"}, timeout=90)
    slurm_cluster.make_eligible(job_id)
    result = slurm_cluster.wait(job_id, timeout=180)

    out = result.output
    assert (result.state, result.exit_code, result.restarts) == ("COMPLETED", 0, 1), out
    for rank in (0, 1):
        assert f"START rank={rank} SLURM_RESTART_COUNT=0" in out, out
        assert f"START rank={rank} SLURM_RESTART_COUNT=1" in out, out
    epoch, step = _stop(out)
    assert step % 10 == 0 and epoch * 60 + step >= 15, out  # after READY, on a check step
    assert f"mirrorfit: SIGUSR1: stopped at epoch {epoch + 1}, step {step} on every worker; " \
           "training state backed up in " in out, out
    assert f"/backup; requeued SLURM job {job_id}" in out, out
    assert f"at epoch {epoch + 1}, step {step} (saved by 2 worker(s), now 2)" in out, out
    assert out.count("FIT DONE") == 1, out  # the preempted attempt ran nothing after fit
    assert "Traceback" not in out and "Terminated" not in out, out  # clean exits

    ref = slurm_cluster.wait(reference, timeout=120)
    assert (ref.state, ref.exit_code, ref.restarts) == ("COMPLETED", 0, 0), ref.output
    with np.load(run_dir / "w.npz") as a, np.load(ref_dir / "w.npz") as b:
        assert a.files == b.files and len(a.files) == 4
        for key in a.files:
            assert float(np.abs(a[key] - b[key]).max()) <= 1e-6, key


@pytest.mark.slow  # `pytest -m slow` runs it (the requeue test covers the signal path)
def test_scancel_backs_up_but_does_not_requeue(slurm_cluster, tmp_path: Path) -> None:
    """(~15 s)"""
    run_dir, run_cfg = _job(tmp_path, "cancelled", slow=True)
    job_id = _submit(slurm_cluster, tmp_path, "mf-cancel", tmp_path / "preempt_job.py", run_cfg)

    _wait_for(run_dir / "ready", slurm_cluster, job_id)
    slurm_cluster.cancel(job_id)
    result = slurm_cluster.wait(job_id, timeout=120)

    out = result.output
    assert (result.state, result.restarts) == ("CANCELLED", 0), result.info
    _stop(out)
    assert "mirrorfit: SIGTERM: stopped at" in out, out
    assert "the job is being cancelled" in out and "not requeued" in out, out
    assert (run_dir / "backup" / "backup.pt").is_file()
    time.sleep(2)
    assert slurm_cluster.job_info(job_id)["JobState"] == "CANCELLED"
