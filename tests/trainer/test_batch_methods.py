"""Keras's train_on_batch, test_on_batch, predict_on_batch and count_params: one batch
through fit, evaluate and predict. (Two replicas: ``tests/multiprocess/test_agreement.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit


def _model(metrics: list[str] | None = None) -> mirrorfit.Model:
    torch.manual_seed(0)
    model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                                torch.nn.Linear(8, 3)))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=metrics or [])
    return model


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 4)).astype("float32"), rng.integers(0, 3, 12)


def test_train_on_batch_is_one_step_of_fit_on_that_batch_and_keeps_history():
    x, y = _batch()
    stepped, fitted = _model(["accuracy"]), _model(["accuracy"])
    fitted_logs = fitted.fit(x, y, batch_size=12, epochs=1, shuffle=False, verbose=0).history
    before = stepped.fit(x[:4], y[:4], batch_size=4, verbose=0, shuffle=False)
    stepped.set_weights(_model().get_weights())  # back to the same start as `fitted`
    loss, accuracy = stepped.train_on_batch(x, y)
    assert [loss, accuracy] == [fitted_logs["loss"][0], fitted_logs["accuracy"][0]]
    for a, b in zip(stepped.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert stepped.history is before  # Keras's train_on_batch does not touch model.history
    logs = stepped.train_on_batch(x, y, class_weight={0: 2.0}, return_dict=True)
    assert sorted(logs) == ["accuracy", "loss"]


def test_test_and_predict_on_batch_equal_evaluate_and_predict():
    x, y = _batch()
    model = _model()
    assert model.test_on_batch(x, y) == model.evaluate(x, y, verbose=0)
    assert model.test_on_batch(x, y, return_dict=True) == {"loss": model.test_on_batch(x, y)}
    np.testing.assert_array_equal(model.predict_on_batch(x), model.predict(x, verbose=0))
    assert model.predict_on_batch(x).shape == (12, 3)


def test_count_params_counts_parameters_as_summary_does():
    model = _model()
    assert model.count_params() == 4 * 8 + 8 + 2 * 8 + 8 * 3 + 3  # not BatchNorm's buffers
    assert f"Total params: {model.count_params():,}" in model.summary(print_fn=lambda s: None)


def test_a_missing_batch_is_named():
    with pytest.raises(ValueError, match="x is None; pass the batch's inputs"):
        _model().train_on_batch(None, None)
