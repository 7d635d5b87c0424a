"""``mirrorfit run``: one host, and two launchers on loopback forming one 4-worker job."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.multiprocess import jobs
from tests.procs import clean_env, run_python, write_script

pytestmark = pytest.mark.multiprocess

# The same job as the MirroredStrategy tests, with devices=None so it joins the world
# the launcher made instead of starting its own workers.
JOINING_JOB = jobs.TRAIN_AND_EVAL.replace(
    "strategy = mirrorfit.MirroredStrategy(devices=devices)",
    "strategy = mirrorfit.MirroredStrategy()\nassert strategy.num_replicas_in_sync == devices",
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mirrorfit", "run", *args]


def test_single_host_run_matches_one_process(tmp_path):
    script = write_script(tmp_path, JOINING_JOB)
    one = run_python(script, "1", "sgd", str(tmp_path / "w1.npz"), timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    res = subprocess.run(_cli("-n", "2", str(script), "2", "sgd", str(tmp_path / "w2.npz")),
                         capture_output=True, text=True, timeout=180, env=clean_env())
    assert res.returncode == 0, res.stderr[-3000:]
    w1, w2 = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w2.npz")
    for k in (k for k in w1.files if k.startswith("arr_")):
        np.testing.assert_allclose(w2[k], w1[k], atol=1e-5, rtol=0)


@pytest.mark.slow  # 4 workers; two hosts are covered by test_two_hosts.py
def test_two_launchers_on_loopback_form_one_four_worker_job(tmp_path):
    script = write_script(tmp_path, JOINING_JOB)
    one = run_python(script, "1", "adam", str(tmp_path / "w1.npz"), timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    port = _free_port()
    common = ["-n", "2", "--nnodes", "2", "--master", f"127.0.0.1:{port}", "--threads", "1"]
    procs = [subprocess.Popen(_cli(*common, "--node-rank", str(r), str(script), "4", "adam",
                                   str(tmp_path / "w4.npz")),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env())
             for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ranks = sorted(line for out, _ in outs for line in out.splitlines() if line.startswith("JSON"))
    assert len(ranks) == 4
    w1, w4 = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w4.npz")
    for k in (k for k in w1.files if k.startswith("arr_")):
        np.testing.assert_allclose(w4[k], w1[k], atol=1e-5, rtol=0)


def test_bad_arguments_are_clear_errors(tmp_path):
    res = subprocess.run(_cli("-n", "2", str(tmp_path / "missing.py")), capture_output=True,
                         text=True, timeout=60, env=clean_env())
    assert res.returncode == 2
    assert "missing.py" in res.stderr and "does not exist" in res.stderr
    script = write_script(tmp_path, "print('hi')\n")
    res = subprocess.run(_cli("--nnodes", "2", str(script)), capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert res.returncode == 2 and "--master HOST:PORT" in res.stderr
    res = subprocess.run(_cli("--nnodes", "2", "--master", "nohost", str(script)),
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert res.returncode == 2 and "'nohost'" in res.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_taken_master_port_is_one_line(tmp_path):
    """Node 0 cannot host the store on a port another program listens on: exit 2 and
    one line naming the port (was: a PortInUseError traceback)."""
    import socket

    script = write_script(tmp_path, "print('hi')\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run(_cli("--nnodes", "2", "--node-rank", "0", "--master",
                                  f"127.0.0.1:{port}", str(script)),
                             capture_output=True, text=True, timeout=60, env=clean_env())
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"mirrorfit run: error: port={port} is already in use on 127.0.0.1; "
                          "name another port in --master HOST:PORT (or --port), or leave "
                          "--port out on one node for a free one.\n")


#: workers that wait outside fit: Ctrl-C reaches them through the launcher's agent
WAITING_JOB = r'''
import os, sys, time
import mirrorfit
strategy = mirrorfit.MirroredStrategy()
with open(os.path.join(sys.argv[1], f"up.{strategy.rank}"), "w"):
    pass
time.sleep(120)
'''


def test_ctrl_c_to_mirrorfit_run_is_one_line_and_exit_130(tmp_path):
    """The launcher handles the signal itself, for ``mirrorfit run`` as for
    ``python train.py`` (was: a SignalException traceback from the agent)."""
    import signal
    import time

    script = write_script(tmp_path, WAITING_JOB)
    proc = subprocess.Popen(_cli("-n", "2", str(script), str(tmp_path)), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"up.{r}").exists() for r in (0, 1)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "SignalException" not in err, err[-3000:]
