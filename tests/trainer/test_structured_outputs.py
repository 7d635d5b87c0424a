"""A model that returns a tuple, list or dict of outputs: the user's loss and metric
functions get the structure whole and predict returns it with an array per output;
a built-in loss or metric, which scores one tensor, names the structure and a fix that
works. (Two replicas: ``tests/multiprocess/test_agreement.py``.)"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit


class Heads(nn.Module):
    """Logits and a score, returned as a dict, a tuple or a list."""

    def __init__(self, kind: str = "dict") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 3)
        self.kind = kind

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        logits = self.body(x)
        parts = (logits, logits.sum(1))
        if self.kind == "dict":
            return {"logits": parts[0], "score": parts[1]}
        return parts if self.kind == "tuple" else list(parts)


def _pick(kind: str) -> object:
    return "logits" if kind == "dict" else 0


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 3, 40)


def _compiled(module: nn.Module, loss: object, metrics: list[object]) -> mirrorfit.Model:
    model = mirrorfit.Model(module)
    model.compile("sgd", loss, metrics=metrics)
    return model


@pytest.mark.parametrize("kind", ["dict", "tuple", "list"])
def test_the_users_functions_get_the_outputs_and_train_as_the_one_tensor_model(kind):
    x, y = _data()
    key = _pick(kind)
    scce = mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)
    accuracy = mirrorfit.metrics.get("accuracy")

    def loss(y_pred, y):  # type: ignore[no-untyped-def]
        return scce(y_pred[key], y)

    def acc(y_pred, y):  # type: ignore[no-untyped-def]
        return accuracy.values(y_pred[key], y)

    heads = _compiled(Heads(kind), loss, [acc])
    plain = _compiled(Heads(kind).body, scce, ["accuracy"])
    h1 = heads.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1).history
    h2 = plain.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=1).history
    assert h1["loss"] == h2["loss"] and h1["acc"] == h2["accuracy"]
    assert heads.evaluate(x, y, verbose=0) == plain.evaluate(x, y, verbose=0)
    out = heads.predict(x, batch_size=16)
    assert type(out) is {"dict": dict, "tuple": tuple, "list": list}[kind]
    np.testing.assert_array_equal(out[key], plain.predict(x, batch_size=16))
    np.testing.assert_allclose(out["score" if kind == "dict" else 1], out[key].sum(1),
                               rtol=1e-6)


def test_a_built_in_loss_names_the_outputs_and_its_fix_works():
    x, y = _data()
    model = _compiled(Heads(), mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True), [])
    with pytest.raises(ValueError, match=re.escape(
            "The loss SparseCategoricalCrossentropy(from_logits=True) scores one output "
            "tensor, but the model returned a dict with keys 'logits', 'score'. Pick the "
            "output in a function: loss=lambda y_pred, y: mirrorfit.losses."
            "SparseCategoricalCrossentropy(from_logits=True)(y_pred['logits'], y);")) as err:
        model.fit(x, y, batch_size=8, verbose=0)
    assert err.value.__context__ is None or err.value.__suppress_context__
    fix = re.search(r"loss=(lambda .*?); or", str(err.value)).group(1)  # type: ignore[union-attr]
    fixed = _compiled(Heads(), eval(fix, {"mirrorfit": mirrorfit}), [])
    assert len(fixed.fit(x, y, batch_size=8, verbose=0).history["loss"]) == 1


@pytest.mark.parametrize("metric, fix", [
    ("accuracy", "def accuracy(y_pred, y): return mirrorfit.metrics.Accuracy(name='accuracy')"
                 ".values(y_pred[0], y), then metrics=[accuracy]"),
    (mirrorfit.metrics.SparseTopKCategoricalAccuracy(k=2, name="top-2"),
     "def metric(y_pred, y): return mirrorfit.metrics.SparseTopKCategoricalAccuracy("
     "name='top-2', k=2).values(y_pred[0], y), then metrics=[metric]"),
])
def test_a_built_in_metric_names_the_outputs_and_its_fix_works(metric, fix):
    x, y = _data()

    def loss(y_pred, y):  # type: ignore[no-untyped-def]
        return nn.functional.cross_entropy(y_pred[0], y)

    model = _compiled(Heads("tuple"), loss, [metric])
    name = "accuracy" if metric == "accuracy" else "top-2"
    with pytest.raises(ValueError, match=re.escape(
            f"The metric {name} scores one output tensor, but the model returned a tuple "
            f"of 2 outputs. Pick the output in a function: {fix}; or return")):
        model.evaluate(x, y, verbose=0)
    definition, fn = fix.split(", then metrics=[")
    scope: dict[str, object] = {"mirrorfit": mirrorfit}
    exec(definition, scope)
    fixed = _compiled(Heads("tuple"), loss, [scope[fn.rstrip("]")]])
    assert 0 <= fixed.evaluate(x, y, verbose=0)[1] <= 1
