"""MirroredStrategy with real gloo workers: same weights as one process, exact
evaluation, one clear error when a worker fails."""

from __future__ import annotations

import os

import numpy as np
import pytest

from mirrorfit.cluster.threads import cpu_slice
from tests.multiprocess import jobs
from tests.procs import run_python, write_script

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train+evaluate+predict with 1 and 2 replicas (SGD), once for the module."""
    tmp = tmp_path_factory.mktemp("mirrored")
    script = write_script(tmp, jobs.TRAIN_AND_EVAL)
    out = {}
    for n in (1, 2):
        res = run_python(script, str(n), "sgd", str(tmp / f"w{n}.npz"), timeout=180)
        assert res.returncode == 0, res.stderr[-3000:]
        out[n] = (res, np.load(tmp / f"w{n}.npz"))
    return out


def test_two_workers_end_with_single_process_weights(runs):
    (_, w1), (_, w2) = runs[1], runs[2]
    keys = [k for k in w1.files if k.startswith("arr_")]
    assert len(keys) == 4
    for k in keys:
        np.testing.assert_allclose(w2[k], w1[k], atol=1e-5, rtol=0)
    # 34 optimizer steps happened: the weights moved away from the seed's init
    assert not np.allclose(w1["arr_0"], 0)


def test_every_worker_reports_the_same_global_history(runs):
    res2, _ = runs[2]
    lines = res2.json_lines()
    assert sorted(line["rank"] for line in lines) == [0, 1]
    assert all(line["replicas"] == 2 for line in lines)
    assert lines[0]["history"] == lines[1]["history"]
    res1, _ = runs[1]
    single = res1.json_lines()[0]["history"]
    assert single["accuracy"] == lines[0]["history"]["accuracy"]
    np.testing.assert_allclose(single["loss"], lines[0]["history"]["loss"], rtol=1e-6)


def test_self_launched_cpu_workers_get_their_own_cores(runs):
    """On a host the job takes whole (2 workers, one core each on 2 cores), each worker
    is bound to its own core; otherwise placement stays the OS's."""
    host = sorted(os.sched_getaffinity(0))
    lines = sorted(runs[2][0].json_lines(), key=lambda line: line["rank"])
    threads = lines[0]["threads"]
    expected = [cpu_slice(host, r, 2, threads) or host for r in range(2)]
    assert [line["cores"] for line in lines] == expected
    if len(host) == 2:  # the CI machine and the development VM: bound, one core each
        assert [line["cores"] for line in lines] == [[host[0]], [host[1]]]
    assert runs[1][0].json_lines()[0]["cores"] == host  # one process: never bound


def test_evaluate_on_odd_sized_set_matches_single_process_exactly(runs):
    single = runs[1][0].json_lines()[0]["eval"]
    for line in runs[2][0].json_lines():
        assert line["eval"]["accuracy"] == single["accuracy"]  # exact: counts
        assert line["eval"]["loss"] == pytest.approx(single["loss"], rel=1e-6)


def test_predict_returns_every_sample_once_in_input_order(runs):
    p1, p2 = runs[1][1]["pred"], runs[2][1]["pred"]
    assert p1.shape == p2.shape == (1001, 2)
    np.testing.assert_allclose(p2, p1, atol=1e-5)


def test_only_the_chief_prints_progress(tmp_path):
    script = write_script(tmp_path, jobs.TRAIN_AND_EVAL.replace("verbose=0", "verbose=2"))
    res = run_python(script, "2", "adam", str(tmp_path / "w.npz"), timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("Epoch 1/2") == 1
    assert res.stdout.count("Epoch 2/2") == 1


def test_exception_on_one_worker_ends_the_run_with_its_message(tmp_path):
    script = write_script(tmp_path, jobs.RAISE_ON_RANK)
    res = run_python(script, timeout=90)
    assert res.returncode != 0
    assert "finished without the error" not in res.stdout
    assert "ValueError: user code failed on purpose at step 3" in res.stderr
    assert res.stderr.count("ValueError: user code failed on purpose") == 1  # printed once
    assert res.stderr.count("Traceback (most recent call last)") == 1
    assert "worker rank 1 failed" in res.stderr
    assert "Connection closed by peer" not in res.stderr  # the consequence is not shown
