"""Ranks that make different local choices still run the same collectives:
rank-dependent verbose and callbacks, a stop asked by one rank mid-epoch, predict
with empty shares and with Dataset pipelines, a model returning a dict of outputs,
class_weight, train_on_batch, steps; and torchrun's own restarts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.procs import clean_env, run_python, write_script

pytestmark = pytest.mark.multiprocess

JOB = r'''
import json, sys
import numpy as np, torch
import mirrorfit
from mirrorfit.data import Dataset

devices = int(sys.argv[1])
strategy = mirrorfit.MirroredStrategy(devices=devices)
mirrorfit.set_seed(0)
x = np.arange(40, dtype="float32").reshape(20, 2) / 40
y = (np.arange(20) % 2).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Linear(2, 2))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
out = {"rank": strategy.rank}

# 1. Horovod habits: verbose and callbacks on the chief only
chief_only = [mirrorfit.callbacks.TerminateOnNaN()] if strategy.is_chief else []
model.fit(x, y, batch_size=4, epochs=1, verbose=1 if strategy.is_chief else 0,
          callbacks=chief_only)

# 2. one rank asks to stop mid-epoch (batch-level logs on): every rank stops together
class StopAtRankStep(mirrorfit.callbacks.Callback):
    batch_logs = True
    def on_train_batch_end(self, batch, logs=None):
        if batch >= 1 + strategy.rank:
            self.model.stop_training = True

hist = model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[StopAtRankStep()])
out["stop_history"] = hist.history

# 3. predict with fewer samples than replicas (an empty share)
out["predict_one"] = list(model.predict(x[:1], batch_size=devices).shape)

# 4. predict on pipelines returns iteration order
lin = torch.nn.Linear(1, 1)
with torch.no_grad():
    lin.weight.fill_(1.0), lin.bias.zero_()
identity = mirrorfit.Model(lin)
identity.compile("sgd", "mse")
xs = np.arange(8, dtype="float32").reshape(8, 1)
def gen():
    for v in xs:
        yield (v,)
pipes = {
    "generator": Dataset.from_generator(gen).batch(4),
    "repeat": Dataset.from_tensor_slices((xs,)).repeat(2).batch(4),
    "shuffle": Dataset.from_tensor_slices((xs,)).shuffle(seed=3).batch(4),
}
out["predict_pipes"] = {k: identity.predict(d)[:, 0].tolist() for k, d in pipes.items()}
out["iterated_shuffle"] = [float(v) for b in pipes["shuffle"] for v in b[0][:, 0]]

# 5. a model that returns a dict of outputs: the user's loss and metric functions get it
class Heads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(2, 2)
    def forward(self, x):
        logits = self.body(x)
        return {"logits": logits, "score": logits.sum(1)}
def head_loss(y_pred, y):
    return torch.nn.functional.cross_entropy(y_pred["logits"], y)
def hit(y_pred, y):  # per sample
    return (y_pred["logits"].argmax(-1) == y).float()
def mean_score(y_pred, y):  # a batch mean
    return y_pred["score"].mean()
mirrorfit.set_seed(0)
with strategy.scope():
    heads = mirrorfit.Model(Heads())
    heads.compile("sgd", head_loss, metrics=[hit, mean_score])
out["heads_history"] = heads.fit(x, y, batch_size=6, epochs=2, verbose=0).history
out["heads_predict"] = {k: v.tolist() for k, v in heads.predict(x, batch_size=8).items()}
out["heads_predict_one"] = {k: list(v.shape)
                            for k, v in heads.predict(x[:1], batch_size=devices).items()}

# 6. class_weight: the same training on any replica count
mirrorfit.set_seed(0)
with strategy.scope():
    weighted = mirrorfit.Model(torch.nn.Linear(2, 2))
    weighted.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
out["class_weight_history"] = weighted.fit(x, y, batch_size=6, epochs=2, verbose=0,
                                           class_weight={0: 1.0, 1: 3.0}).history

# 7. train_on_batch: the batch given is the global batch, split over the replicas
out["on_batch"] = [weighted.train_on_batch(x[:7], y[:7]) for _ in range(3)]
out["on_batch_weights"] = [w.tolist() for w in weighted.get_weights()]

# 8. steps: the first global batches of an infinite Dataset, on any replica count
forever = Dataset.from_tensor_slices((x, y)).repeat().batch(5)
out["first_steps"] = weighted.evaluate(forever, steps=3, verbose=0)
out["first_steps_finite"] = weighted.evaluate(x[:15], y[:15], batch_size=5, verbose=0)
sys.stdout.write("JSON " + json.dumps(out) + "\n"); sys.stdout.flush()
'''


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agreement")
    script = write_script(tmp, JOB)
    out = {}
    for n in (1, 2):
        res = run_python(script, str(n), timeout=180)
        assert res.returncode == 0, res.stderr[-3000:]
        out[n] = res.json_lines()
    return out


def test_rank_dependent_verbose_and_callbacks_do_not_desynchronise(results):
    assert sorted(line["rank"] for line in results[2]) == [0, 1]


def test_a_stop_asked_by_one_rank_stops_every_rank_at_the_same_step(results):
    r0, r1 = results[2]
    assert r0["stop_history"] == r1["stop_history"]
    assert len(r0["stop_history"]["loss"]) == 1  # stopped in the first epoch


def test_predict_with_an_empty_share(results):
    assert all(line["predict_one"] == [1, 2] for line in results[2])


def test_predict_on_pipelines_returns_iteration_order(results):
    single = results[1][0]
    assert single["predict_pipes"]["generator"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert single["predict_pipes"]["repeat"] == [0, 1, 2, 3, 4, 5, 6, 7] * 2
    assert single["predict_pipes"]["shuffle"] == single["iterated_shuffle"]
    for line in results[2]:
        assert line["predict_pipes"] == single["predict_pipes"]


def test_a_model_with_a_dict_of_outputs_trains_and_predicts_alike_on_two_replicas(results):
    single = results[1][0]
    hist = single["heads_history"]
    assert sorted(hist) == ["hit", "loss", "mean_score"] and len(hist["loss"]) == 2
    pred = single["heads_predict"]
    np.testing.assert_allclose(np.sum(pred["logits"], axis=1), pred["score"], rtol=1e-6)
    assert len(pred["score"]) == 20
    for line in results[2]:
        for key, values in hist.items():
            np.testing.assert_allclose(line["heads_history"][key], values, rtol=1e-5)
        for key, values in pred.items():  # each sample once, in input order
            np.testing.assert_allclose(line["heads_predict"][key], values, rtol=1e-5)
        assert line["heads_predict_one"] == {"logits": [1, 2], "score": [1]}



def test_class_weight_trains_alike_on_two_replicas(results):
    single = results[1][0]["class_weight_history"]
    assert len(single["loss"]) == 2
    for line in results[2]:
        np.testing.assert_allclose(line["class_weight_history"]["loss"], single["loss"],
                                   rtol=1e-5)



def test_train_on_batch_steps_alike_on_two_replicas(results):
    single = results[1][0]
    assert single["on_batch"][0] > single["on_batch"][-1]  # three steps on one batch
    for line in results[2]:
        np.testing.assert_allclose(line["on_batch"], single["on_batch"], rtol=1e-5)
        for a, b in zip(line["on_batch_weights"], single["on_batch_weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)



def test_steps_take_the_same_first_batches_on_two_replicas(results):
    single = results[1][0]
    assert single["first_steps"] == pytest.approx(single["first_steps_finite"], rel=1e-12)
    for line in results[2]:
        assert line["first_steps"] == pytest.approx(single["first_steps"], rel=1e-6)


RESTART = r'''
import os
import sys
import torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy()
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
t = torch.ones(1) * (strategy.rank + 1)
strategy.all_reduce(t)
if attempt == 0 and strategy.rank == 1:
    os._exit(3)
strategy.barrier()
sys.stdout.write(f"attempt {attempt} rank {strategy.rank} sum {t.item():.0f}\n")
sys.stdout.flush()
'''


def test_torchrun_restarts_rejoin_through_a_fresh_store_prefix(tmp_path):
    script = write_script(tmp_path, RESTART)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", "--max-restarts", "1", str(script)],
                         capture_output=True, text=True, timeout=120,
                         env=clean_env(MIRRORFIT_TIMEOUT="30"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "attempt 1 rank 0 sum 3" in res.stdout and "attempt 1 rank 1 sum 3" in res.stdout
