"""An exception, a signal or an ``os._exit`` on one worker, at any point of a run:
the job ends within seconds with a non-zero status, and the cause is printed
once, labelled with the rank (the other workers' consequences are not shown)."""

from __future__ import annotations

import pytest

from mirrorfit.cluster.errors import WorkerFailure, format_failures
from tests.faults import jobs
from tests.faults.helpers import assert_one_error, assert_workers_gone, headline, run_job

# (fault point, rank that fails): both ranks are covered, the chief included
RAISES = [("build", 1), pytest.param("first_step", 0, marks=pytest.mark.slow),
          ("mid_epoch", 1), pytest.param("evaluate", 1, marks=pytest.mark.slow),
          pytest.param("callback", 0, marks=pytest.mark.slow), ("checkpoint", 0)]


@pytest.mark.multiprocess
@pytest.mark.parametrize(("point", "rank"), RAISES)
def test_exception_on_one_worker_ends_the_job_with_its_traceback_once(
        tmp_path, fault_table, point, rank):
    out = run_job(tmp_path, jobs.FAULT, point, str(rank), "300", str(tmp_path))
    fault_table.add(f"exception on rank {rank}: {point}", out, headline(out))
    assert_workers_gone(out)
    if point == "checkpoint":  # the chief's save fails for real: the target's parent is a file
        assert_one_error(out, rank, "not-a-directory' is a file, not a directory.")
        assert f"[rank {rank}] NotADirectoryError: Cannot write" in out.stderr
    else:
        assert_one_error(out, rank, f"RuntimeError: injected fault at {point} on rank {rank}")
    assert f"worker rank {rank} failed (exit code 1):" in out.stderr


@pytest.mark.multiprocess
def test_worker_killed_by_a_signal_is_named_with_the_signal(tmp_path, fault_table):
    out = run_job(tmp_path, jobs.FAULT, "kill", "1")
    fault_table.add("rank 1 killed by SIGKILL mid-epoch", out, headline(out))
    assert_workers_gone(out)
    assert_one_error(out, 1, "worker rank 1 was killed by SIGKILL (exit code -9).",
                     traceback=False)


@pytest.mark.multiprocess
def test_worker_that_calls_os_exit_is_named_with_its_code(tmp_path, fault_table):
    out = run_job(tmp_path, jobs.FAULT, "exit", "0")
    fault_table.add("rank 0 calls os._exit(3) mid-epoch", out, headline(out))
    assert_workers_gone(out)
    assert_one_error(out, 0, "worker rank 0 exited with code 3 without raising a Python "
                             "exception", traceback=False)


def test_a_lost_peer_with_no_error_of_its_own_is_explained():
    lost = WorkerFailure(rank=0, exitcode=1, message="RuntimeError: Connection closed by peer",
                         traceback="RuntimeError: ... Connection closed by peer [127.0.0.1]:1")
    text = format_failures([lost], 2)
    assert "no worker reported an error of its own; rank 0 lost a peer" in text
    real = WorkerFailure(rank=1, exitcode=1, message="ValueError: x", traceback="ValueError: x",
                         time=lost.time + 1)
    assert "no worker reported" not in format_failures([lost, real], 2)
