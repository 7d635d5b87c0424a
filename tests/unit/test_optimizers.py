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


@pytest.mark.parametrize(("name", "fused", "foreach"), [
    ("adam", True, None), ("adamw", True, None), ("sgd", None, True), ("rmsprop", None, True),
    ("adadelta", None, True), ("nadam", None, True), ("adagrad", None, None),
])
def test_names_choose_multi_tensor_kernels(name: str, fused: bool | None,
                                           foreach: bool | None) -> None:
    group = optimizers.get(name, _params()).param_groups[0]
    assert (group.get("fused"), group["foreach"]) == (fused, foreach)


def test_kernel_choice_keeps_the_users_and_reads_groups_once() -> None:
    assert optimizers.get("adam", _params(), fused=False).param_groups[0]["fused"] is False
    assert optimizers.get("adam", _params(), foreach=True).param_groups[0]["fused"] is None
    net = torch.nn.Linear(3, 2)
    groups = [{"params": iter([net.weight]), "lr": 0.5}, {"params": iter([net.bias])}]
    opt = optimizers.get("adam", groups)  # generators inside groups are read twice safely
    assert [len(g["params"]) for g in opt.param_groups] == [1, 1]
    assert opt.param_groups[0]["fused"] is True and opt.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop", "adadelta", "nadam"])
def test_multi_tensor_kernels_match_the_per_parameter_loop(name: str) -> None:
    """sgd, rmsprop and adadelta: the loop's arithmetic bit for bit; fused adam(w) and
    foreach nadam order their operations differently (rounding, ~1e-8 here)."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
            for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [optimizers.get(name, nets[0].parameters(), foreach=False),
            optimizers.get(name, nets[1].parameters())]
    x = torch.randn(20, 6)
    for _ in range(20):
        for net, opt in zip(nets, opts, strict=True):
            net(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    tol = 1e-6 if name in ("adam", "adamw", "nadam") else 0.0
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
    assert not torch.equal(nets[0][0].weight, torch.zeros(5, 6))


def test_sparse_gradients_still_train_with_sgd() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    before = emb.weight.detach().clone()
    opt = optimizers.get("sgd", emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    changed = (emb.weight.detach() != before).any(dim=1)
    assert changed.tolist() == [i in (1, 2) for i in range(10)]


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
