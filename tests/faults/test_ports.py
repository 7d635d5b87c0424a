"""Ports: a port the user names that is taken is a clear error before any worker
starts; without one, several jobs on one host each find a free port; the
rendezvous store (and every socket the job listens on) is bound to loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.faults import jobs
from tests.faults.helpers import JOB_TIMEOUT_S, Outcome, run_job
from tests.procs import Result, clean_env, write_script

pytestmark = pytest.mark.multiprocess

SIMULTANEOUS_JOBS = 2  # at once, each on its own loopback port


def test_a_taken_port_is_a_clear_error_before_workers_start(tmp_path, fault_table):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_job(tmp_path, jobs.SMALL, str(port))
    out.fault_at = out.ended_at - out.result.seconds  # no worker: time the whole run
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    fault_table.add(f"port={port} already in use", out, lines[-1] if lines else "")
    assert out.result.returncode != 0
    assert f"port={port} is already in use on 127.0.0.1; pass another port, or port=None" \
        in out.stderr
    assert out.stderr.count("is already in use") == 1
    assert out.stderr.count("Traceback (most recent call last)") == 1
    assert not out.pids, "workers were started"


def _decode(addr: str) -> str:
    """``0100007F:1F90`` (/proc/net/tcp) -> ``127.0.0.1:8080``; IPv6 left in hex."""
    host, port = addr.split(":")
    if len(host) == 8:
        host = socket.inet_ntoa(bytes.fromhex(host)[::-1])
    return f"{host}:{int(port, 16)}"


@pytest.fixture(scope="module")
def simultaneous(tmp_path_factory):
    """Three 2-worker jobs started at once, none naming a port."""
    procs = []
    for i in range(SIMULTANEOUS_JOBS):
        tmp = tmp_path_factory.mktemp(f"job{i}")
        script = write_script(tmp, jobs.SMALL)
        procs.append(subprocess.Popen([sys.executable, str(script), "none"], cwd=tmp,
                                      env=clean_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    start = time.perf_counter()
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=JOB_TIMEOUT_S * 2)
        res = Result(p.returncode, stdout, stderr, time.perf_counter() - start)
        outs.append(Outcome(res, time.time()))
    return outs


def test_simultaneous_jobs_each_find_a_free_port(simultaneous):
    stores = set()
    for out in simultaneous:
        assert out.result.returncode == 0, out.stderr[-3000:]
        lines = out.lines()
        assert sorted(line["rank"] for line in lines) == [0, 1]
        stores |= {line["store"] for line in lines}
    assert len(stores) == SIMULTANEOUS_JOBS, stores


def test_the_store_and_every_listening_socket_are_on_loopback(simultaneous):
    for out in simultaneous:
        for line in out.lines():
            host, port = line["store"].rsplit(":", 1)
            assert host == "127.0.0.1"
            parent = [_decode(a) for a in line["parent_listening"]]
            worker = [_decode(a) for a in line["worker_listening"]]
            assert f"127.0.0.1:{port}" in parent, parent  # the parent hosts the store
            for addr in parent + worker:
                assert addr.startswith("127.0.0.1:"), f"listening beyond loopback: {addr}"
