"""Keras-style optimizer classes (mirrorfit.optimizers.Adam, RMSprop, ...) and the
"did you mean" message for unknown names."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit import losses, metrics, optimizers
from mirrorfit.strategies.setup import Clipping

CLASSES = [(optimizers.Adam, torch.optim.Adam), (optimizers.AdamW, torch.optim.AdamW),
           (optimizers.SGD, torch.optim.SGD), (optimizers.RMSprop, torch.optim.RMSprop),
           (optimizers.Adagrad, torch.optim.Adagrad), (optimizers.Adadelta, torch.optim.Adadelta),
           (optimizers.Adamax, torch.optim.Adamax), (optimizers.Nadam, torch.optim.NAdam)]


@pytest.mark.parametrize(("cls", "base"), CLASSES)
def test_classes_are_torch_optimizers_with_keras_arguments(cls: type, base: type) -> None:
    opt = cls(learning_rate=0.25, clipnorm=2.0, clipvalue=0.5)
    assert not opt.bound and (opt.clipnorm, opt.clipvalue, opt.global_clipnorm) == (2.0, 0.5, None)
    built = optimizers.get(opt, torch.nn.Linear(3, 2).parameters())  # what compile does
    assert built is opt and isinstance(opt, base) and opt.bound
    assert opt.defaults["lr"] == 0.25 and opt.learning_rate == 0.25
    # torch style, with Keras 2's lr alias and a positional learning rate (Keras style)
    assert cls(torch.nn.Linear(3, 2).parameters(), lr=0.5).defaults["lr"] == 0.5
    assert cls(0.125).learning_rate == 0.125


def test_keras_defaults_and_names() -> None:
    params = list(torch.nn.Linear(3, 2).parameters())
    rms = optimizers.RMSprop(params, rho=0.8, epsilon=1e-5)
    assert (rms.defaults["lr"], rms.defaults["alpha"], rms.defaults["eps"]) == (1e-3, 0.8, 1e-5)
    adam = optimizers.Adam(params, beta_2=0.98)
    assert adam.defaults["betas"] == (0.9, 0.98) and adam.defaults["eps"] == 1e-7
    assert optimizers.SGD(params).defaults["lr"] == 0.01
    assert optimizers.get("adamax", params).defaults["eps"] == 1e-7


def test_inverse_time_decay_as_keras_2() -> None:
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = optimizers.SGD([weight], learning_rate=1.0, decay=0.5)
    for _ in range(4):
        weight.grad = torch.ones(1)
        opt.step()
    # steps use lr / (1 + 0.5 * k) for k = 0, 1, 2, 3
    expected = -sum(1.0 / (1.0 + 0.5 * k) for k in range(4))
    assert weight.item() == pytest.approx(expected)
    assert opt.param_groups[0]["lr"] == 1.0 and opt.iterations == 4  # base lr kept


def test_decay_resumes_exactly_from_state_dict() -> None:
    def run(steps: int, opt_state: dict | None = None,
            start: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        weight = torch.nn.Parameter(torch.ones(3) if start is None else start.clone())
        opt = optimizers.RMSprop([weight], learning_rate=0.1, decay=0.3)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for _ in range(steps):
            weight.grad = weight.detach() * 2 + 1
            opt.step()
        return weight.detach(), opt.state_dict()

    straight, _ = run(6)
    half, state = run(3)
    assert state["iterations"] == 3
    resumed, _ = run(3, state, half)
    torch.testing.assert_close(resumed, straight, rtol=0, atol=0)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="learning_rate or lr"):
        optimizers.Adam(learning_rate=0.1, lr=0.2)
    with pytest.raises(ValueError, match=r"only one of clipnorm=1\.0 and global_clipnorm=1\.0"):
        optimizers.SGD(clipnorm=1.0, global_clipnorm=1.0)
    with pytest.raises(ValueError, match="clipvalue must be a positive number"):
        optimizers.SGD(clipvalue=0)
    with pytest.raises(ValueError, match="decay must be a non-negative number"):
        optimizers.SGD(decay=-1)
    opt = optimizers.Adam()
    with pytest.raises(RuntimeError, match="no parameters yet"):
        opt.step()
    opt.bind(torch.nn.Linear(2, 1).parameters())
    with pytest.raises(RuntimeError, match="create a new one for each model"):
        opt.bind([])


@pytest.mark.parametrize(("resolve", "typo", "meant"), [
    (lambda n: optimizers.get(n, torch.nn.Linear(2, 1).parameters()), "adma", "adam"),
    (lambda n: optimizers.get(n, torch.nn.Linear(2, 1).parameters()), "RMSProp2", "rmsprop"),
    (losses.get, "sparse_categorical_crossentropie", "sparse_categorical_crossentropy"),
    (losses.get, "mes", "mse"),
    (metrics.get, "acuracy", "accuracy"),
])
def test_unknown_names_suggest_the_closest(resolve, typo: str, meant: str) -> None:
    with pytest.raises(ValueError, match=f"Unknown .* {typo!r}: did you mean {meant!r}\\?"):
        resolve(typo)


def test_clipping_attributes_go_to_the_strategy() -> None:
    """compile reads the optimizer's clipping into the strategy's Clipping, which clips the
    gradient before the step (the optimizer itself does not clip)."""
    x = np.random.default_rng(0).normal(scale=10.0, size=(8, 4)).astype("float32")
    y = np.zeros((8, 1), "float32")
    for opt, check in [
        (optimizers.SGD(learning_rate=1.0, clipvalue=0.01),
         lambda moved: np.testing.assert_allclose(np.abs(moved), 0.01, rtol=1e-5)),
        (optimizers.SGD(learning_rate=1.0, global_clipnorm=0.5),
         lambda moved: np.testing.assert_allclose(np.linalg.norm(moved), 0.5, rtol=1e-5)),
    ]:
        mirrorfit.set_seed(0)
        module = torch.nn.Linear(4, 1, bias=False)
        start = module.weight.detach().numpy().copy()
        model = mirrorfit.Model(module)
        model.compile(opt, "mse")
        setup = model.training_context.setup
        assert setup.clipping == Clipping(None, opt.clipvalue, opt.global_clipnorm)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)  # one step
        check(module.weight.detach().numpy() - start)


def test_rebind_keeps_the_decay_schedule() -> None:
    """A strategy that replaces the parameters rebinds the optimizer in place: the decay's
    step count and hooks stay with it, and it trains the new parameters."""
    source = torch.nn.Linear(3, 1)
    target, twin = copy.deepcopy(source), copy.deepcopy(source)
    opt = optimizers.RMSprop(source.parameters(), learning_rate=0.1, decay=0.5)
    reference = optimizers.RMSprop(twin.parameters(), learning_rate=0.1, decay=0.5)
    before = {id(p): name for name, p in source.named_parameters()}
    assert optimizers.rebind(opt, before, dict(target.named_parameters())) is opt
    untouched = copy.deepcopy(source.state_dict())
    for _ in range(3):
        for module, optimizer in ((target, opt), (twin, reference)):
            optimizer.zero_grad()
            module(torch.ones(2, 3)).square().sum().backward()
            optimizer.step()
    torch.testing.assert_close(target.state_dict(), twin.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(source.state_dict(), untouched, rtol=0, atol=0)
    assert opt.iterations == 3 and opt.state_dict()["iterations"] == 3
    assert opt.param_groups[0]["lr"] == 0.1  # the base rate, decay applied around each step
