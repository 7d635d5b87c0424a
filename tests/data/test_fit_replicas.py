"""A Dataset under MirroredStrategy in real gloo workers: 1 and 3 replicas train alike.

Two pipelines: cache-free with per-sample and per-batch maps, and ``batch().cache()``.

Each replica reads only its share of every global batch, and the order comes from
(seed, epoch) alone, so the weights after training do not depend on the replica count.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.procs import run_python, write_script

pytestmark = pytest.mark.multiprocess

JOB = r'''
import json, sys
import numpy as np, torch
import mirrorfit
from mirrorfit.data import Dataset

devices, out = int(sys.argv[1]), sys.argv[2]
strategy = mirrorfit.MirroredStrategy(devices=devices)
mirrorfit.set_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(1001, 20)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Sequential(
        torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
# per-sample map, global batch 60 (last batch 41), per-batch map on each share, prefetch
ds = (Dataset.from_tensor_slices((x, y)).shuffle().map(lambda a, b: (2 * a, b))
      .batch(60).map(lambda a, b: (a / 2, b)).prefetch(2))
hist = model.fit(ds, epochs=2, verbose=0, seed=7)
# tf.data's usual order: batches cached (each replica keeps its shares), then reshuffled
with strategy.scope():
    cached = mirrorfit.Model(torch.nn.Sequential(
        torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)))
    cached.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
cds = (Dataset.from_tensor_slices((x, y)).shuffle().map(lambda a, b: (2 * a, b))
       .batch(60).cache().shuffle().prefetch())
cached.fit(cds, epochs=2, verbose=0, seed=7)
if strategy.is_chief:
    np.savez(out, *model.get_weights())
    np.savez(out.replace(".npz", "-cache.npz"), *cached.get_weights())
line = json.dumps({"rank": strategy.rank, "loss": hist.history["loss"]})
sys.stdout.write("JSON " + line + "\n")  # one write: lines of workers never interleave
sys.stdout.flush()
'''


@pytest.mark.slow  # tests/invariance/test_replicas.py trains 1, 2 and 3 replicas
def test_one_and_three_replicas_end_with_the_same_weights(tmp_path) -> None:
    script = write_script(tmp_path, JOB)
    weights, losses = {}, {}
    for n in (1, 3):
        res = run_python(script, str(n), str(tmp_path / f"w{n}.npz"), timeout=240)
        assert res.returncode == 0, res.stderr[-3000:]
        weights[n] = np.load(tmp_path / f"w{n}.npz")
        weights[(n, "cache")] = np.load(tmp_path / f"w{n}-cache.npz")
        losses[n] = {line["rank"]: line["loss"] for line in res.json_lines()}
    assert sorted(losses[3]) == [0, 1, 2]
    np.testing.assert_allclose(losses[3][0], losses[1][0], rtol=1e-5)
    for key in weights[1].files:
        np.testing.assert_allclose(weights[3][key], weights[1][key], atol=1e-5, rtol=0)
        np.testing.assert_allclose(weights[(3, "cache")][key], weights[(1, "cache")][key],
                                   atol=1e-5, rtol=0)
