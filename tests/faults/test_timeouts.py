"""A collective reached by some ranks only (a rank stuck outside training, a
chief-only barrier, a rank that left early) ends the job after the collective
timeout, with a message that names the timeout and how to raise it."""

from __future__ import annotations

import pytest

from mirrorfit.cluster.errors import timeout_hint
from mirrorfit.strategies.mirrored import DEFAULT_TIMEOUT, collective_timeout
from tests.faults import jobs
from tests.faults.helpers import assert_workers_gone, headline, run_job

TIMEOUT_S = 4


@pytest.mark.parametrize(("point", "rank", "via_env"), [
    ("stuck", 1, False),                  # rank 1 sleeps; rank 0 waits in DDP's all-reduce
    # a barrier on the chief only; MIRRORFIT_TIMEOUT
    pytest.param("chief_only_collective", 0, True, marks=pytest.mark.slow),
    pytest.param("sys_exit", 1, False, marks=pytest.mark.slow),  # rank 1 leaves early
])
@pytest.mark.multiprocess
def test_collective_reached_by_some_ranks_only_times_out_with_a_hint(
        tmp_path, fault_table, point, rank, via_env):
    if via_env:
        out = run_job(tmp_path, jobs.FAULT, point, str(rank), MIRRORFIT_TIMEOUT=str(TIMEOUT_S))
    else:
        out = run_job(tmp_path, jobs.FAULT, point, str(rank), str(TIMEOUT_S))
    fault_table.add(f"{point} on rank {rank} (timeout {TIMEOUT_S} s)", out, headline(out))
    assert_workers_gone(out)
    err = out.stderr
    assert out.result.returncode != 0
    assert err.count(f"a collective waited longer than timeout={TIMEOUT_S} s") == 1, err[-3000:]
    assert "MirroredStrategy(timeout=seconds) or MIRRORFIT_TIMEOUT=seconds" in err
    assert err.count("Traceback (most recent call last)") == 1, err[-4000:]
    assert out.seconds_to_gone >= TIMEOUT_S - 0.5  # it was the timeout that ended it


def test_timeout_defaults_to_300_s_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("MIRRORFIT_TIMEOUT", raising=False)
    assert collective_timeout(None) == DEFAULT_TIMEOUT == 300.0
    assert collective_timeout(12) == 12.0
    monkeypatch.setenv("MIRRORFIT_TIMEOUT", "45")
    assert collective_timeout(None) == 45.0
    assert collective_timeout(7.5) == 7.5  # the argument wins
    monkeypatch.setenv("MIRRORFIT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MIRRORFIT_TIMEOUT must be a number of seconds, "
                                         "received 'soon'"):
        collective_timeout(None)
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, received 0"):
        collective_timeout(0)


def test_hint_only_for_timeouts():
    assert timeout_hint("RuntimeError: shapes cannot be multiplied", 5.0) == ""
    gloo = "RuntimeError: [../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms"
    assert "timeout=5 s" in timeout_hint(gloo, 5.0)
