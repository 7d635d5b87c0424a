"""Keras 3 models in mirrorfit.Model on one process: training=, model.losses,
BatchNormalization statistics, compile's Keras objects, save and load."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit import keras_models

X = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
Y = np.arange(64) % 3
LOGITS = mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)


def _net(*layers: keras.layers.Layer) -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), *layers, keras.layers.Dense(3)])


def _frozen_fit(net: keras.Model) -> tuple[float, float]:
    """(fit's loss, evaluate's loss) with a learning rate of 0: the weights do not move."""
    model = mirrorfit.Model(net)
    model.compile(mirrorfit.optimizers.SGD(learning_rate=0.0), LOGITS)
    fit_loss = model.fit(X, Y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    return fit_loss.history["loss"][0], float(model.evaluate(X, Y, batch_size=64, verbose=0))


def test_dropout_runs_in_training_only() -> None:
    fit_loss, eval_loss = _frozen_fit(_net(keras.layers.Dense(32), keras.layers.Dropout(0.9)))
    assert fit_loss != pytest.approx(eval_loss, rel=1e-3)  # dropout active in fit
    model = mirrorfit.Model(_net(keras.layers.Dense(32), keras.layers.Dropout(0.9)))
    model.compile("sgd", LOGITS)
    np.testing.assert_array_equal(model.predict(X), model.predict(X))  # inactive in predict


def test_model_losses_are_added() -> None:
    net = _net(keras.layers.Dense(8, kernel_regularizer=keras.regularizers.L2(0.5)))
    fit_loss, eval_loss = _frozen_fit(net)
    kernel = net.layers[0].kernel.value.detach()
    logits = torch.as_tensor(net(torch.from_numpy(X), training=False).detach())
    data = float(LOGITS(logits, torch.from_numpy(Y)))
    penalty = 0.5 * float(kernel.square().sum())
    assert eval_loss == pytest.approx(data + penalty, rel=1e-5)
    assert fit_loss == pytest.approx(data + penalty, rel=1e-5)


def test_batchnorm_moving_statistics_are_updated_and_used() -> None:
    net = _net(keras.layers.Dense(8), keras.layers.BatchNormalization())
    bn = net.layers[1]
    model = mirrorfit.Model(net)
    model.compile("adam", LOGITS, ["accuracy"])
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    assert np.abs(bn.moving_mean.numpy()).max() > 1e-3  # zeros before the fix
    frozen = bn.moving_mean.numpy().copy()
    model.evaluate(X, Y, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), frozen)


def test_unsynced_keras_batchnorm_on_replicas_is_refused() -> None:
    net = _net(keras.layers.BatchNormalization())
    with pytest.raises(ValueError, match=r"sync_batchnorm=True"):
        keras_models.check_batchnorm(net, replicas=2)
    keras_models.check_batchnorm(net, replicas=1)
    keras_models.check_batchnorm(keras_models.convert_sync_batchnorm(net), replicas=2)


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({"optimizer": keras.optimizers.Adam()}, "mirrorfit.optimizers.Adam(...)"),
    ({"loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
     "mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)"),
    ({"loss": keras.losses.categorical_crossentropy}, "loss='categorical_crossentropy'"),
    ({"metrics": [keras.metrics.SparseCategoricalAccuracy()]}, "metrics=['accuracy']"),
])
def test_keras_compile_objects_say_what_to_pass(kwargs: dict, fix: str) -> None:
    model = mirrorfit.Model(_net())
    args = {"optimizer": "adam", "loss": LOGITS, **kwargs}
    with pytest.raises(TypeError, match="compile received a Keras") as err:
        model.compile(**args)
    assert fix in str(err.value)


def test_weights_and_saved_models_round_trip(tmp_path) -> None:
    net = _net(keras.layers.Dense(8), keras.layers.BatchNormalization())
    model = mirrorfit.Model(net)
    model.compile("adam", LOGITS)
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.pt")
    expected = model.predict(X)
    twin = mirrorfit.Model(_net(keras.layers.Dense(8), keras.layers.BatchNormalization()))
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(twin.predict(X), expected, rtol=0, atol=0)
    loaded = mirrorfit.load_model(tmp_path / "model.pt",
                                  module=_net(keras.layers.Dense(8),
                                              keras.layers.BatchNormalization()))
    np.testing.assert_allclose(loaded.predict(X), expected, rtol=0, atol=0)
    loaded.fit(X, Y, batch_size=16, epochs=1, verbose=0)  # continues with the saved optimizer
