"""On 2 real gloo workers: predict before compile, the logits warning once (from the
chief), and an unknown optimizer name ending the job with one "did you mean" error, not
one per worker."""

from __future__ import annotations

import pytest

from tests.procs import run_python, write_script

pytestmark = pytest.mark.multiprocess

JOB = r'''
import os
import numpy as np, torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = np.arange(64) % 3
torch.manual_seed(0)
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Linear(4, 3))
expected = model.module(torch.from_numpy(x)).detach().numpy()
assert np.allclose(model.predict(x, batch_size=10), expected, atol=1e-6)  # before compile
model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
model.fit(x, y, batch_size=16, epochs=2, verbose=0)
os.write(1, f"fitted {strategy.rank}\n".encode())  # one write: lines do not interleave
model.compile("adma", "sparse_categorical_crossentropy")
'''


def test_one_warning_and_one_error_for_the_job(tmp_path) -> None:
    res = run_python(write_script(tmp_path, JOB), timeout=240)
    assert res.returncode == 1
    assert sorted(res.stdout.split()) == ["0", "1", "fitted", "fitted"]
    assert res.stderr.count("from_logits=True") == 1, res.stderr  # the chief's warning only
    assert res.stderr.count("did you mean 'adam'?") == 1, res.stderr
    assert res.stderr.count("Traceback") <= 1, res.stderr
