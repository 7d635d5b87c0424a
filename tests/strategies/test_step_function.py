"""The strategy's train function: the one-frame step where nothing changes torch's own
calls, the strategy's methods everywhere else, the same arithmetic either way."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit import precision
from mirrorfit.strategies.setup import Setup, StepInputs


class Counting(mirrorfit.OneDeviceStrategy):
    """A strategy that overrides its step methods (calling the base's): the general step."""

    def __init__(self) -> None:
        super().__init__("cpu")
        self.calls = {"forward_backward": 0, "optimizer_step": 0}

    def forward_backward(self, setup: Setup, inputs: StepInputs,
                         scale: float) -> tuple[torch.Tensor | None, Any]:
        self.calls["forward_backward"] += 1
        return super().forward_backward(setup, inputs, scale)

    def optimizer_step(self, setup: Setup) -> bool:
        self.calls["optimizer_step"] += 1
        return super().optimizer_step(setup)


def _train(strategy: mirrorfit.strategies.Strategy, steps_per_update: int,
           sample_weight: bool) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(44, 5)).astype("float32"), rng.integers(0, 3, 44)
    sw = rng.uniform(0.5, 2.0, 44).astype("float32") if sample_weight else None
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                                    torch.nn.Linear(8, 3)))
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], steps_per_update=steps_per_update)
    history = model.fit(x, y, sample_weight=sw, batch_size=8, epochs=2, verbose=0, seed=1)
    return model.module.state_dict(), history.history


@pytest.mark.parametrize(("steps_per_update", "sample_weight"), [(1, False), (2, True)])
def test_the_one_frame_step_trains_exactly_as_the_strategys_methods(
        steps_per_update: int, sample_weight: bool) -> None:
    counting = Counting()
    plain = _train(mirrorfit.OneDeviceStrategy("cpu"), steps_per_update, sample_weight)
    general = _train(counting, steps_per_update, sample_weight)
    # 6 batches per epoch (the last of 4 samples), 2 epochs; an update every group
    assert counting.calls == {"forward_backward": 12,
                              "optimizer_step": 12 // steps_per_update}
    assert plain[1] == general[1]
    for name, value in plain[0].items():
        assert torch.equal(value, general[0][name]), name


def test_the_step_goes_through_a_policy_or_clipping_that_changes_it() -> None:
    strategy = mirrorfit.OneDeviceStrategy("cpu")
    module = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    calls = lambda *a: None  # noqa: E731 - neither runs here

    def step_of(**setup_args: Any) -> str:
        setup = strategy.setup(module, opt, **setup_args)
        return strategy.train_function(setup, calls, calls).__qualname__.split(".")[0]

    assert step_of() == "plain_step"
    assert step_of(precision="mixed_bfloat16") == "general_step"
    assert step_of(clipping=mirrorfit.strategies.setup.Clipping(clipnorm=1.0)) == "general_step"


def test_only_the_float32_policy_passes_straight_through() -> None:
    class Logged(precision.FullPrecision):
        def backward(self, loss: torch.Tensor) -> None:
            super().backward(loss)

    assert precision.passthrough(precision.FullPrecision())
    assert not precision.passthrough(Logged())
    assert not precision.passthrough(precision.resolve("mixed_bfloat16", torch.device("cpu")))
