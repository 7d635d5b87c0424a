"""A collective called on one rank more often than on the others.

Without help, gloo aborts the rank that receives data of the wrong size
(``terminate called after throwing an instance of 'gloo::EnforceNotMet' … Is there
a distributed collective mismatch in your code?``, SIGABRT), with no Python frame.
The launcher now reads the worker's crash dump and says that the ranks disagreed
on a collective, where (the user's line) and how to learn more; with
``MIRRORFIT_DEBUG=1`` torch's collective checker names the two collectives and
the first rank to see the mismatch raises a Python error with its traceback.
"""

from __future__ import annotations

import pytest

from tests.faults.helpers import assert_workers_gone, headline, run_job

pytestmark = pytest.mark.multiprocess

#: rank 0 reduces once more than rank 1, in a callback, while rank 1 goes on
#: training (its next collective is DDP's gradient all-reduce): gloo aborts
EXTRA_REDUCE_IN_FIT = r'''
import json, os, sys, time
import numpy as np, torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
sys.stdout.write("JSON " + json.dumps({"rank": strategy.rank, "pid": os.getpid()}) + "\n")
sys.stdout.flush()


class Extra(mirrorfit.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3 and strategy.rank == 0:
            sys.stdout.write("JSON " + json.dumps({"fault_at": time.time()}) + "\n")
            sys.stdout.flush()
            strategy.reduce(1.0)  # EXTRA CALL


mirrorfit.set_seed(0)
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                                torch.nn.Linear(16, 2)))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).random((256, 8), dtype=np.float32)
y = (x[:, 0] > 0.5).astype("int64")
model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[Extra()])
'''

#: after compile (DDP is built on the group), rank 0 reduces once more than rank 1,
#: whose next collective is a broadcast
EXTRA_REDUCE_BEFORE_BROADCAST = r'''
import json, os, sys, time
import torch
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2)
sys.stdout.write("JSON " + json.dumps({"rank": strategy.rank, "pid": os.getpid()}) + "\n")
sys.stdout.flush()
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Linear(4, 2))
    model.compile("sgd", "mse")
strategy.reduce(1.0)
if strategy.rank == 0:
    sys.stdout.write("JSON " + json.dumps({"fault_at": time.time()}) + "\n")
    sys.stdout.flush()
    strategy.reduce(2.0)  # EXTRA CALL
strategy.broadcast_object({"step": 1})
'''


def _line_of(body: str, marker: str) -> int:
    return next(i for i, text in enumerate(body.splitlines(), 1) if marker in text)


def test_an_abort_in_a_collective_is_named_with_the_users_line(tmp_path, fault_table) -> None:
    out = run_job(tmp_path, EXTRA_REDUCE_IN_FIT, MIRRORFIT_TIMEOUT="30")
    fault_table.add("a collective on rank 0 only, inside fit (gloo aborts)", out, headline(out))
    assert_workers_gone(out)
    err = out.stderr
    assert out.result.returncode == 1, err[-3000:]
    assert err.count("the ranks disagreed on a collective") == 1, err[-3000:]
    line = _line_of(EXTRA_REDUCE_IN_FIT, "EXTRA CALL")
    assert f"called from {tmp_path / 'job.py'}, line {line}, in on_train_batch_end" in err, err
    assert "rerun with MIRRORFIT_DEBUG=1" in err and "Traceback" not in err, err[-3000:]


def test_mirrorfit_debug_names_the_mismatched_collectives(tmp_path, fault_table) -> None:
    out = run_job(tmp_path, EXTRA_REDUCE_BEFORE_BROADCAST, MIRRORFIT_DEBUG="1",
                  MIRRORFIT_TIMEOUT="30")
    fault_table.add("a collective on rank 0 only, MIRRORFIT_DEBUG=1", out, headline(out))
    assert_workers_gone(out)
    err = out.stderr
    assert out.result.returncode == 1, err[-3000:]
    assert err.count("Detected mismatch between collectives on ranks") == 1, err[-3000:]
    # either rank may be the first to see it: rank 0 in its extra reduce, or rank 1 in its
    # broadcast; torch names what each rank was running and how they differ
    assert "Collectives differ in the following aspects" in err, err[-3000:]
    assert "OpType=ALLREDUCE" in err or "OpType=BROADCAST" in err, err[-3000:]
    lines = {_line_of(EXTRA_REDUCE_BEFORE_BROADCAST, "EXTRA CALL"),
             _line_of(EXTRA_REDUCE_BEFORE_BROADCAST, "broadcast_object")}
    assert any(f'File "{tmp_path / "job.py"}", line {n}, in <module>' in err for n in lines)
    assert err.count("Traceback (most recent call last)") == 1, err[-3000:]
