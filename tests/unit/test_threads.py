"""CPU placement of mirrorfit's workers: thread counts and core slices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mirrorfit.cluster.threads import cpu_slice, threads_per_worker


def test_workers_that_take_the_host_get_consecutive_slices() -> None:
    assert [cpu_slice([0, 1, 2, 3], r, 2, 2) for r in range(2)] == [[0, 1], [2, 3]]
    assert [cpu_slice([3, 5], r, 2, 1) for r in range(2)] == [[3], [5]]  # the allowed set
    assert [cpu_slice(list(range(7)), r, 3, 2) for r in range(3)] == [[0, 1], [2, 3], [4, 5]]


def test_a_job_smaller_than_the_host_is_left_to_the_os() -> None:
    assert cpu_slice([0, 1, 2, 3], 0, 2, 1) is None  # 1 thread each: two such jobs would stack
    assert cpu_slice([0, 1], 0, 4, 1) is None  # more workers than cores
    assert cpu_slice([0, 1], 0, 1, 1) is None  # one process, one of two cores
    with pytest.raises(ValueError, match="received 2"):
        cpu_slice([0, 1], 2, 2, 1)


def test_threads_per_worker_is_the_even_share_unless_set(monkeypatch) -> None:
    monkeypatch.delenv("MIRRORFIT_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(2) == max(1, cores // 2)
    monkeypatch.setenv("MIRRORFIT_NUM_THREADS", "3")
    assert threads_per_worker(2) == 3
    monkeypatch.setenv("MIRRORFIT_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="'two'"):
        threads_per_worker(2)


_BIND = r'''
import json, os, sys, threading
from mirrorfit.cluster.threads import bind_worker
host = sorted(os.sched_getaffinity(0))
got = bind_worker(int(sys.argv[1]), 2, len(host) // 2)
later = []
t = threading.Thread(target=lambda: later.append(sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(json.dumps({"host": host, "got": got, "now": sorted(os.sched_getaffinity(0)),
                  "thread": later[0]}))
'''


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to split")
@pytest.mark.parametrize("rank", [0, 1])
@pytest.mark.parametrize("setting", ["1", "0"])
def test_bind_worker_pins_the_process_and_later_threads(rank: int, setting: str) -> None:
    env = {**os.environ, "MIRRORFIT_CPU_BIND": setting}
    out = subprocess.run([sys.executable, "-c", _BIND, str(rank)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    res = json.loads(out)
    half = len(res["host"]) // 2
    if setting == "0":
        assert res["got"] is None and res["now"] == res["thread"] == res["host"]
    else:
        assert res["got"] == res["now"] == res["thread"] == res["host"][rank * half:][:half]
