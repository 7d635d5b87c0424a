"""The line the parent prints before torch elastic restarts the workers."""

from __future__ import annotations

from mirrorfit.cluster.elastic_agent import restart_message
from mirrorfit.cluster.errors import WorkerFailure


def test_signal_names_the_rank_and_the_signal():
    failures = [WorkerFailure(rank=0, exitcode=-15), WorkerFailure(rank=1, exitcode=-9)]
    assert restart_message(1, 3, failures) == (
        "mirrorfit: restart 1/3 (previous attempt: worker rank 1 was killed by SIGKILL "
        "(exit code -9))\n")


def test_exception_shows_its_traceback_then_the_line():
    tb = "Traceback (most recent call last):\n  File \"x.py\"\nValueError: boom\n"
    text = restart_message(2, 2, [WorkerFailure(rank=1, exitcode=1, traceback=tb,
                                                message="ValueError: boom", time=1.0)])
    assert "[rank 1] ValueError: boom" in text
    assert text.endswith("mirrorfit: restart 2/2 (previous attempt: worker rank 1 failed "
                         "(exit code 1): ValueError: boom)\n")


def test_no_failure_means_a_membership_change():
    assert "membership changed" in restart_message(1, 1, [])
