"""A NaN loss without TerminateOnNaN: one warning, at the user's line, naming the epoch,
the batch and the fixes; nothing when TerminateOnNaN watches or the loss stays finite.
(The 2-worker case, NaN on one rank's inputs, is in ``tests/faults/test_nan.py``.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.callbacks import Callback, TerminateOnNaN

ADVICE = ("; training goes on, and the weights are probably no longer finite. Add "
          "mirrorfit.callbacks.TerminateOnNaN() to stop at the first bad step, try a lower "
          "learning rate, and check the inputs for NaN or inf values")


class BatchLogs(Callback):
    """Any callback that asks for the global logs at every step."""

    batch_logs = True


def _data(nan_sample: int | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    if nan_sample is not None:
        x[nan_sample, 1] = np.nan
    return x, (x[:, 0] > 0).astype("float32")[:, None]


def _fit(nan_sample: int | None, epochs: int = 3, callbacks=(), model=None):
    if model is None:
        mirrorfit.set_seed(0)
        model = mirrorfit.Model(torch.nn.Linear(3, 1))
        model.compile("sgd", "mse")
    x, y = _data(nan_sample)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=list(callbacks))
    ours = [w for w in caught if "the training loss is" in str(w.message)]
    return model, ours


def test_a_nan_input_warns_once_at_the_end_of_its_epoch():
    model, ours = _fit(nan_sample=9)  # batch 2 of 4 in every epoch
    assert len(ours) == 1, [str(w.message) for w in ours]
    assert ours[0].category is RuntimeWarning
    assert ours[0].filename == __file__  # the user's line, not mirrorfit's
    assert str(ours[0].message) == (
        "mirrorfit: the training loss is nan at epoch 1, batch 3 (the first bad batch lies "
        "between batch 0 and batch 3: the loss is checked only where it is logged, so no step "
        "waits for the check)" + ADVICE + " (e.g. numpy.isfinite(x).all()).")
    _, again = _fit(nan_sample=9, epochs=1, model=model)
    assert again == []  # once per compiled model


def test_with_batch_logs_the_batch_is_exact():
    _, ours = _fit(nan_sample=9, callbacks=[BatchLogs()])
    assert len(ours) == 1
    assert str(ours[0].message).startswith(
        "mirrorfit: the training loss is nan at epoch 1, batch 2" + ADVICE)


@pytest.mark.parametrize("nan_sample", [9, None])
def test_no_warning_with_terminate_on_nan_or_a_finite_loss(nan_sample, capsys):
    callbacks = [TerminateOnNaN()] if nan_sample is not None else []
    _, ours = _fit(nan_sample, callbacks=callbacks)
    assert ours == []
    if nan_sample is not None:  # TerminateOnNaN says it instead
        assert "Epoch 1, batch 2: invalid loss nan" in capsys.readouterr().out
