"""Keras optimizer names, defaults and keyword names mapped onto torch.optim."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mirrorfit import optimizers


def _params() -> Iterator[torch.nn.Parameter]:
    return torch.nn.Linear(3, 2).parameters()


@pytest.mark.parametrize(("name", "cls", "expected"), [
    ("adam", torch.optim.Adam, {"lr": 1e-3, "eps": 1e-7, "betas": (0.9, 0.999)}),
    ("adamw", torch.optim.AdamW, {"lr": 1e-3, "eps": 1e-7, "weight_decay": 0.004}),
    ("sgd", torch.optim.SGD, {"lr": 0.01, "momentum": 0.0}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
    ("adagrad", torch.optim.Adagrad, {"lr": 1e-3, "initial_accumulator_value": 0.1}),
    ("adadelta", torch.optim.Adadelta, {"lr": 1e-3, "rho": 0.95, "eps": 1e-7}),
    ("nadam", torch.optim.NAdam, {"lr": 1e-3, "eps": 1e-7}),
    ("Adam", torch.optim.Adam, {"lr": 1e-3}),
])
def test_names_use_keras_defaults(name: str, cls: type, expected: dict) -> None:
    opt = optimizers.get(name, _params())
    assert type(opt) is cls
    assert {k: opt.defaults[k] for k in expected} == expected


def test_keras_keyword_names_are_translated() -> None:
    opt = optimizers.get("adam", _params(), learning_rate=0.5, beta_2=0.98, epsilon=1e-5)
    assert (opt.defaults["lr"], opt.defaults["betas"], opt.defaults["eps"]) == (
        0.5, (0.9, 0.98), 1e-5)
    assert optimizers.get("rmsprop", _params(), rho=0.8).defaults["alpha"] == 0.8
    assert optimizers.get("adadelta", _params(), rho=0.8).defaults["rho"] == 0.8
    sgd = optimizers.get("sgd", _params(), learning_rate=0.1, momentum=0.9, nesterov=True)
    assert (sgd.defaults["lr"], sgd.defaults["nesterov"]) == (0.1, True)
    assert optimizers.get("adam", _params(), lr=0.2).defaults["lr"] == 0.2  # torch names too


def test_instance_class_and_factory() -> None:
    opt = torch.optim.SGD(_params(), lr=0.3)
    assert optimizers.get(opt) is opt
    built = optimizers.get(torch.optim.SGD, _params(), learning_rate=0.25)
    assert type(built) is torch.optim.SGD and built.defaults["lr"] == 0.25
    made = optimizers.get(lambda params: torch.optim.Adam(params, lr=0.125), _params())
    assert made.defaults["lr"] == 0.125


def test_the_optimizer_steps() -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    opt = optimizers.get("sgd", [weight])
    weight.sum().backward()
    opt.step()
    torch.testing.assert_close(weight.detach(), torch.full((2,), 0.99))


def test_errors_echo_the_value() -> None:
    with pytest.raises(ValueError, match="'adamm'") as info:
        optimizers.get("adamm", _params())
    assert "'rmsprop'" in str(info.value) and "'nadam'" in str(info.value)
    with pytest.raises(TypeError, match="clipnorm"):
        optimizers.get("adam", _params(), clipnorm=1.0)
    with pytest.raises(ValueError, match=r"\['learning_rate', 'lr'\]"):
        optimizers.get("adam", _params(), lr=1.0, learning_rate=2.0)
    with pytest.raises(ValueError, match="lr"):
        optimizers.get(torch.optim.SGD(_params(), lr=0.1), lr=0.2)
    with pytest.raises(ValueError, match="params=None"):
        optimizers.get("adam")
    with pytest.raises(TypeError, match=r"expected a torch\.optim\.Optimizer"):
        optimizers.get(lambda params: "not an optimizer", _params())  # type: ignore[arg-type,return-value]
