"""The torch-native face with real workers: ``examples/own_loop.py`` on 2 CPU workers
matches one process, and ``strategy.run(fn)`` works from an interactive session."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.procs import REPO, clean_env, run_python, write_script

pytestmark = pytest.mark.multiprocess

# 1025 = 16 * 64 + 1: the last global batch has one sample, so rank 1's share is empty.
# One epoch: at the example's lr 0.05 with momentum 0.9 the two runs' rounding
# differences (DDP sums gradients in another order, ~5e-8 after an epoch) grow about 40x
# per epoch, and a max-pool tie flipped by them jumped 3e-4 in the second epoch
# (measured; with average pooling: 5e-8, 3e-6, 8e-5 after epochs 1-3). Sampler orders
# across epochs are checked exactly in test_pieces.py.
ARGS = ("--train-samples", "1025", "--test-samples", "1001", "--epochs", "1")
ENV = {"MIRRORFIT_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def own_loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("own_loop")
    out = {}
    for n in (1, 2):
        res = run_python(REPO / "examples" / "own_loop.py", "--devices", str(n), *ARGS,
                         "--save", str(tmp / f"w{n}.npz"), timeout=180, env=clean_env(**ENV))
        assert res.returncode == 0, res.stderr[-4000:]
        out[n] = (res.stdout, np.load(tmp / f"w{n}.npz"))
    return out


def _epochs(stdout: str) -> list[tuple[str, ...]]:
    pattern = r"epoch \d: trained on (\d+) samples; test loss ([\d.]+), accuracy ([\d.]+) \((\d+)"
    return re.findall(pattern, stdout)


def test_two_workers_train_the_weights_of_one_process(own_loop):
    one, two = own_loop[1][1], own_loop[2][1]
    assert sorted(one.files) == sorted(two.files)
    for k in one.files:
        np.testing.assert_allclose(two[k], one[k], atol=1e-5, rtol=0, err_msg=k)
        assert np.isfinite(two[k]).all()  # the empty share's NaN mean never reached a weight


def test_every_sample_once_per_epoch_and_exact_test_accuracy(own_loop):
    one, two = _epochs(own_loop[1][0]), _epochs(own_loop[2][0])
    assert len(one) == len(two) == 1
    for a, b in zip(one, two, strict=True):
        assert a[0] == b[0] == "1025" and a[3] == b[3] == "1001"
        assert a[2] == b[2]  # accuracy printed to 4 digits: the same counts
        assert abs(float(a[1]) - float(b[1])) <= 1e-4
    assert "Number of devices: 2" in own_loop[2][0]


NOTEBOOK = r'''
import json
import numpy as np, torch
import mirrorfit
from mirrorfit.strategies.run import WorkersFailed

strategy = mirrorfit.MirroredStrategy(devices=2)   # no script to re-run: waits for run()
print("PARENT " + json.dumps({"replicas": strategy.num_replicas_in_sync}))

def work(scale):
    s = mirrorfit.get_strategy()
    with s.scope():
        model = mirrorfit.Model(torch.nn.Linear(3, 1))
        model.compile("sgd", "mse")
    x, y = np.ones((10, 3), "float32"), np.ones((10, 1), "float32")
    hist = model.fit(x, y, batch_size=4, epochs=2, verbose=0, seed=0)
    return {"rank": s.rank, "replicas": s.num_replicas_in_sync, "same": s is strategy,
            "sum": s.reduce(float(s.rank + 1), "sum"), "scale": scale,
            "threads": torch.get_num_threads(), "epochs": len(hist.history["loss"])}

print("RESULT " + json.dumps(strategy.run(work, scale=10)))

def fails():
    if mirrorfit.get_strategy().rank == 1:
        raise ValueError("boom on purpose")
    mirrorfit.get_strategy().barrier()

try:
    strategy.run(fails)
except WorkersFailed as exc:
    print("FAILED " + json.dumps(str(exc)))
try:
    with strategy.scope():
        mirrorfit.Model(torch.nn.Linear(3, 1)).compile("sgd", "mse")
except RuntimeError as exc:
    print("SCOPE " + json.dumps(str(exc)))
'''


def test_run_starts_workers_on_a_function_from_an_interactive_session(tmp_path):
    path = write_script(tmp_path, NOTEBOOK, "notebook.py")
    # `python -c` has no script file, like a notebook: the function cannot be re-run by path
    res = run_python("-c", f"exec(open({str(path)!r}).read())", timeout=120,
                     env=clean_env(**ENV))
    assert res.returncode == 0, res.stderr[-4000:]
    got = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
           for line in res.stdout.splitlines() if line.split(" ", 1)[0].isupper()}
    assert got["PARENT"] == {"replicas": 2}
    assert got["RESULT"] == {"rank": 0, "replicas": 2, "same": True, "sum": 3.0, "scale": 10,
                             "threads": 1, "epochs": 2}  # the chief's value, back here
    assert "worker rank 1 failed" in got["FAILED"]
    assert "ValueError: boom on purpose" in got["FAILED"]
    assert "strategy.run(fn)" in got["SCOPE"]
