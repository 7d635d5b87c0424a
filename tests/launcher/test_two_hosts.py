"""``mirrorfit run --nnodes 2`` across real network interfaces: two network
namespaces on this machine are the two hosts, joined by a veth pair (see
``tests/netns.py``). Nothing is set by hand: each launcher finds the interface
that reaches the master and hands it to gloo (``GLOO_SOCKET_IFNAME``).

Needs root and ``ip``; skipped with the reason elsewhere. (~25–40 s)
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests import netns
from tests.launcher.test_run_cli import JOINING_JOB
from tests.procs import clean_env, run_python, write_script

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(300)]

# the job also reports which interface gloo was told to use
JOB = JOINING_JOB.replace('"threads": torch.get_num_threads()',
                          '"threads": torch.get_num_threads(), '
                          '"ifname": os.environ.get("GLOO_SOCKET_IFNAME")')


@pytest.fixture
def hosts():
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    try:
        pair = netns.HostPair()
    except subprocess.CalledProcessError as exc:  # e.g. no veth support in this kernel
        pytest.skip(f"cannot link two network namespaces here: {' '.join(exc.cmd)}: "
                    f"{exc.stderr.strip()}")
    try:
        yield pair
    finally:
        pair.close()


def test_two_namespaces_train_to_the_one_host_weights(hosts, tmp_path):
    script = write_script(tmp_path, JOB)
    one = run_python(script, "1", "adam", str(tmp_path / "w1.npz"), timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]

    master = f"{hosts.a.address}:29400"
    sent_before = hosts.a.tx_bytes()
    procs = [
        host.popen([sys.executable, "-m", "mirrorfit", "run", "-n", "1", "--nnodes", "2",
                    "--node-rank", str(rank), "--master", master, "--threads", "1",
                    str(script), "2", "adam", str(tmp_path / "w2.npz")],
                   env=clean_env())
        for rank, host in enumerate((hosts.a, hosts.b))
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]

    rows = [json.loads(line[5:]) for out, _ in outs for line in out.splitlines()
            if line.startswith("JSON ")]
    assert sorted(row["rank"] for row in rows) == [0, 1]
    assert [row["ifname"] for row in sorted(rows, key=lambda r: r["rank"])] == [
        hosts.a.interface, hosts.b.interface]
    assert all(row["replicas"] == 2 for row in rows)
    # every byte between the hosts crosses the veth pair: the model's gradients did
    assert hosts.a.tx_bytes() - sent_before > 10_000

    w1, w2 = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w2.npz")
    for k in (k for k in w1.files if k.startswith("arr_")):
        np.testing.assert_allclose(w2[k], w1[k], atol=1e-5, rtol=0)
