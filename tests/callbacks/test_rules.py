"""Keras's rules, one process: each callback driven with scripted global logs
(the values every replica sees) or trained for a few epochs."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.callbacks import (
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ReduceLROnPlateau,
)
from mirrorfit.callbacks.monitor import Monitor
from mirrorfit.callbacks.step_timing import format_breakdown, summarize
from tests.callbacks.helpers import build, data


def _drive(cb, key, values, model=None):
    """on_train_begin, then on_epoch_end with ``{key: v}`` until the model stops."""
    model = model or build()
    cb.set_model(model)
    model.stop_training = False
    cb.on_train_begin()
    seen = []
    for epoch, v in enumerate(values):
        logs = {key: v}
        cb.on_epoch_end(epoch, logs)
        seen.append(logs)
        if model.stop_training:
            break
    return seen


# --- Monitor ---------------------------------------------------------------------------
def test_monitor_modes_and_min_delta():
    assert Monitor("val_loss").mode == "min" and Monitor("val_accuracy").mode == "max"
    assert Monitor("auc", mode="min").mode == "min"
    m = Monitor("loss", min_delta=0.1)
    assert m.improves(0.5, None) and m.improves(0.39, 0.5) and not m.improves(0.41, 0.5)
    assert m.update(1.0) and not m.update(0.95) and m.best == 1.0
    with pytest.raises(ValueError, match="received 'lowest'"):
        Monitor("loss", mode="lowest")
    with pytest.raises(ValueError, match="min_delta must be a number >= 0; received -1"):
        Monitor("loss", min_delta=-1)


# --- EarlyStopping -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, values, stopped", [
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.96, 0.97], 3),            # 2 epochs without a better one
    ({"patience": 1, "min_delta": 0.2}, [1.0, 0.9, 0.85], 1),      # 0.1 better is not enough
    ({"patience": 0}, [1.0, 1.0], 1),
    ({"patience": 2, "baseline": 0.5}, [0.8, 0.8, 0.8], 1),        # never under the baseline
    ({"patience": 1, "start_from_epoch": 2}, [9.0, 9.0, 3.0, 4.0], 3),
    ({"patience": 3}, [1.0, 0.9, 0.8, 0.7, 0.6], 0),               # keeps improving: no stop
])
def test_early_stopping_follows_keras(kwargs, values, stopped):
    cb = EarlyStopping("val_loss", **kwargs)
    _drive(cb, "val_loss", values)
    assert cb.stopped_epoch == stopped


def test_early_stopping_maximises_accuracy_and_warns_once_per_epoch_without_the_key():
    cb = EarlyStopping("val_accuracy", patience=1)
    _drive(cb, "val_accuracy", [0.5, 0.6, 0.55])
    assert cb.mode == "max" and cb.best == 0.6 and cb.stopped_epoch == 2
    with pytest.warns(UserWarning, match=r"EarlyStopping: the logs hold no 'val_loss' "
                                         r"\(available: \['loss'\]\)"):
        _drive(EarlyStopping(), "loss", [1.0])


def test_early_stopping_restores_the_best_epochs_weights():
    model = build(lr=0.3)
    x, y = data()
    snapshots = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(model.get_weights()))
    # min_delta so large that nothing after epoch 0 counts: the best is epoch 0
    stop = EarlyStopping("loss", min_delta=100.0, patience=2, restore_best_weights=True)
    hist = model.fit(x, y, batch_size=10, epochs=10, verbose=0, callbacks=[record, stop])
    assert hist.epoch == [0, 1, 2] and stop.best_epoch == 0
    assert not np.array_equal(snapshots[2][0], snapshots[0][0])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), snapshots[0],
                                                    strict=True))


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ValueError, match="patience must be an integer >= 0; received -1"):
        EarlyStopping(patience=-1)
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'; received 'up'"):
        EarlyStopping(mode="up")


# --- ReduceLROnPlateau -------------------------------------------------------------------
def test_reduce_lr_on_plateau_follows_keras_with_cooldown_and_min_lr():
    model = build()
    for g in model.optimizer.param_groups:
        g["lr"] = 0.1
    cb = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, cooldown=2, min_lr=0.03)
    seen = _drive(cb, "val_loss", [1.0] * 7, model)
    # e1: reduce, cooldown 2; e2: in cooldown; e3: cooldown over, reduce; ... floor at 0.03
    assert [logs["learning_rate"] for logs in seen] == [0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03]
    assert model.optimizer.param_groups[0]["lr"] == 0.03


def test_reduce_lr_on_plateau_resets_wait_on_improvement():
    model = build()
    cb = ReduceLROnPlateau("loss", factor=0.1, patience=2, min_delta=0.0)
    seen = _drive(cb, "loss", [1.0, 1.1, 0.9, 1.0, 1.0, 1.0], model)
    lrs = [logs["learning_rate"] for logs in seen]
    assert lrs == pytest.approx([0.05, 0.05, 0.05, 0.05, 0.05, 0.005])


def test_reduce_lr_on_plateau_rejects_a_factor_of_one_or_more():
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\); received factor=1.5"):
        ReduceLROnPlateau(factor=1.5)


# --- LearningRateScheduler -----------------------------------------------------------------
def test_schedule_functions_with_one_or_two_arguments():
    x, y = data()
    model = build()
    h = model.fit(x, y, batch_size=30, epochs=3, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))])
    assert h.history["learning_rate"] == [0.1, 0.05, 0.1 / 3]
    h = model.fit(x, y, batch_size=30, epochs=2, verbose=0,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 2)])
    assert h.history["learning_rate"] == [0.2 / 3, 0.4 / 3]


def test_torch_scheduler_steps_once_per_epoch():
    x, y = data()
    model = build(lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(model.optimizer, step_size=2, gamma=0.1)
    h = model.fit(x, y, batch_size=30, epochs=5, verbose=0,
                  callbacks=[LearningRateScheduler(sched)])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])


def test_scheduler_errors_name_the_problem():
    model = build()
    other = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.1)
    cb = LearningRateScheduler(torch.optim.lr_scheduler.StepLR(other, 1))
    x, y = data()
    with pytest.raises(ValueError, match="built on another optimizer"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[cb])
    with pytest.raises(TypeError, match=r"use mirrorfit\.callbacks\.ReduceLROnPlateau"):
        LearningRateScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(model.optimizer))
    with pytest.raises(TypeError, match=r"received int\."):
        LearningRateScheduler(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"schedule\(0\) must return a learning rate .* "
                                         r"received 'fast'"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[LearningRateScheduler(lambda e, lr: "fast")])


# --- LambdaCallback --------------------------------------------------------------------------
def test_lambda_callback_hooks_and_batch_logs():
    x, y = data()
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append("begin"),
                        on_batch_end=lambda batch, logs: calls.append(round(logs["loss"], 9)),
                        on_test_end=lambda logs: calls.append("test"))
    assert cb.batch_logs  # a batch-end function reads the running loss
    build().fit(x, y, batch_size=45, epochs=1, verbose=0, validation_split=0.2, callbacks=[cb])
    assert calls[0] == "begin" and calls[-1] == "test"
    assert len(calls) == 4 and all(isinstance(v, float) for v in calls[1:3])
    with pytest.raises(TypeError, match="'on_epoch_ends' is not a callback hook"):
        LambdaCallback(on_epoch_ends=print)
    with pytest.raises(TypeError, match="on_epoch_end must be callable; received int"):
        LambdaCallback(on_epoch_end=1)  # type: ignore[arg-type]


# --- StepTiming ------------------------------------------------------------------------------
def test_step_timing_splits_compute_and_waiting():
    from array import array

    ranks = [(0.3, array("d", [1.0, 2.0, 3.0])), (0.1, array("d", [2.0, 1.0, 3.0]))]
    b = summarize(ranks)
    # per step the shortest time counts as compute: (1 + 1 + 3) / 3
    assert b["compute"] == pytest.approx(5 / 3) and b["wait"] == pytest.approx(2 - 5 / 3)
    assert b["data"] == pytest.approx(0.4 / 6) and b["steps"] == 3
    assert format_breakdown(b) == ("Per step, 2 replicas, 3 steps: 2066.67 ms = waiting for "
                                   "data 66.67 ms (3%), computing 1666.67 ms (81%), waiting "
                                   "for the other replicas 333.33 ms (16%)")
    one = summarize([(0.0, array("d", [1.0]))])
    assert one["wait"] == 0 and "other replicas" not in format_breakdown(one)


def test_fit_prints_the_breakdown_only_when_verbose(capsys):
    x, y = data()
    model = build()
    model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    assert "Per step" not in capsys.readouterr().out
    model.fit(x, y, batch_size=30, epochs=2, verbose=2)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Per step")]
    assert len(lines) == 1 and lines[0].startswith("Per step, 1 replica, 6 steps: ")


def test_fit_reads_no_step_clock_when_it_will_not_print(monkeypatch):
    from mirrorfit.callbacks.step_timing import StepTiming

    calls = []
    original = StepTiming.on_train_batch_begin
    monkeypatch.setattr(StepTiming, "on_train_batch_begin",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    x, y = data()
    model = build()
    model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    assert calls == []  # two clock reads per step, for a line verbose=0 never prints
    model.fit(x, y, batch_size=30, epochs=1, verbose=2)
    assert len(calls) == 3



def test_a_hook_one_callback_defines_is_called_directly_and_each_of_several_in_order():
    from mirrorfit.callbacks.callback_list import CallbackList

    seen = []
    one = LambdaCallback(on_batch_end=lambda batch, logs: seen.append(("one", batch)))
    two = LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(("two", batch)))
    model = build()
    alone = CallbackList([one, mirrorfit.callbacks.Callback()], model, {})
    assert alone.on_train_batch_end == one.on_train_batch_end  # no fan-out frame per step
    both = CallbackList([two, one], model, {})
    both.on_train_batch_end(3, {})
    alone.on_train_batch_end(4, logs={})
    assert seen == [("two", 3), ("one", 3), ("one", 4)]

# --- the old import and the docstring examples -----------------------------------------------
def test_learning_rate_warmup_moved_and_old_import_works():
    from mirrorfit.scaling import LearningRateWarmup

    assert LearningRateWarmup is mirrorfit.callbacks.LearningRateWarmup
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        mirrorfit.scaling.Nope  # noqa: B018


@pytest.mark.parametrize("name", ["monitor", "chief_io", "csv_logger", "early_stopping",
                                  "reduce_lr_on_plateau", "learning_rate_scheduler",
                                  "lambda_callback", "learning_rate_warmup", "tensorboard"])
def test_docstring_examples_run(name):
    module = importlib.import_module(f"mirrorfit.callbacks.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
