"""model.save -> mirrorfit.load_model: predict and evaluate at once, fit on as if never
saved, with loss, metric and optimizer objects; the user's own callables come back
through custom_objects; predict never needs compile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit import losses, metrics, optimizers
from tests.checkpoint.helpers import data, same_weights


def _module() -> torch.nn.Module:
    mirrorfit.set_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _compiled(optimizer, loss, metric_list) -> mirrorfit.Model:
    model = mirrorfit.Model(_module())
    model.compile(optimizer, loss, metric_list)
    return model


def _continues_identically(model: mirrorfit.Model, loaded: mirrorfit.Model, x, y) -> None:
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == model.evaluate(
        x, y, verbose=0, return_dict=True)
    model.fit(x, y, batch_size=30, epochs=2, verbose=0, seed=3)
    loaded.fit(x, y, batch_size=30, epochs=2, verbose=0, seed=3)
    assert same_weights(loaded, model)


@pytest.mark.parametrize("optimizer", [
    torch.optim.SGD(_module().parameters(), lr=0.05, momentum=0.9),
    optimizers.RMSprop(learning_rate=0.01, decay=0.05),  # decay's step count comes back too
    "nadam",
], ids=["torch-sgd", "keras-rmsprop-decay", "name"])
def test_objects_round_trip(tmp_path, optimizer) -> None:
    x, y = data()
    y = np.arange(len(y)) % 3
    if isinstance(optimizer, torch.optim.SGD):  # bound to this model's parameters
        module = _module()
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
        model = mirrorfit.Model(module)
        model.compile(optimizer, losses.SparseCategoricalCrossentropy(from_logits=True),
                      [metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"), "accuracy"])
    else:
        model = _compiled(optimizer, losses.SparseCategoricalCrossentropy(from_logits=True),
                          [metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"), "accuracy"])
    model.fit(x, y, batch_size=30, epochs=2, verbose=0, seed=1)
    model.save(tmp_path / "m.pt")
    loaded = mirrorfit.load_model(tmp_path / "m.pt", module=_module())
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded._trainer.steps.loss_fn.from_logits is True
    assert set(loaded.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "top2",
                                                                         "accuracy"}
    _continues_identically(model, loaded, x, y)


def my_loss(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_pred - y_true).square().mean()


def my_metric(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    return (y_pred - y_true).abs().mean()


def test_own_callables_are_named_and_come_back_through_custom_objects(tmp_path) -> None:
    x = data()[0]
    y = np.random.default_rng(1).normal(size=(len(x), 3)).astype("float32")
    model = _compiled("adam", my_loss, [my_metric])
    model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    model.save(tmp_path / "m.pt")
    fix = r"custom_objects=\{'my_loss': my_loss, 'my_metric': my_metric\}"
    with pytest.raises(ValueError, match=rf"your own loss 'my_loss', metric 'my_metric'.*{fix}"
                                         r".*compile=False"):
        mirrorfit.load_model(tmp_path / "m.pt", module=_module())
    bare = mirrorfit.load_model(tmp_path / "m.pt", module=_module(), compile=False)
    np.testing.assert_array_equal(bare.predict(x), model.predict(x))  # no compile needed
    loaded = mirrorfit.load_model(tmp_path / "m.pt", module=_module(),
                                  custom_objects={"my_loss": my_loss, "my_metric": my_metric})
    _continues_identically(model, loaded, x, y)


def test_predict_needs_no_compile() -> None:
    x = data()[0]
    module = _module()
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(mirrorfit.Model(module).predict(x, batch_size=7), expected,
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match="not compiled"):
        mirrorfit.Model(module).evaluate(x, np.zeros(len(x), "int64"))
