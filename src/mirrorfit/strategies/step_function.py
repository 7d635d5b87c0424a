"""One training step as one function, built once per model by the strategy (Keras's
``make_train_function``): the forward pass and the loss under the precision policy,
the backward pass, and on an update the optimizer step.

:func:`general_step` calls the strategy's ``forward_backward`` and ``optimizer_step``,
inside the strategy's backward-synchronization control where it has one.
:func:`plain_step` is the same arithmetic in one frame, for a strategy that changes
none of it: :meth:`Strategy.train_function` picks it where ``forward_backward`` and
``optimizer_step`` are the base class's own, the precision policy does nothing
(float32), nothing clips and no backward synchronization is skipped. With it (and a
trimmed trainer loop) a step of fit makes 10 calls into mirrorfit's files instead of
16, and runs 314 bytecodes in them instead of 419 (``tests/trainer/test_hot_path.py``,
``bench/step_bytecodes.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from mirrorfit.strategies.capabilities import BackwardSyncControl
from mirrorfit.strategies.setup import Setup, StepInputs

Call = Callable[[nn.Module, Any], Any]
LossCall = Callable[[Any, Any, "torch.Tensor | None"], torch.Tensor]
#: ``(x, y, sample_weight, scale, update) -> (loss, y_pred)``: the detached share mean and
#: the output (None for both on a rank that does not compute the output)
TrainStep = Callable[[Any, Any, "torch.Tensor | None", float, bool],
                     tuple["torch.Tensor | None", Any]]


class StepMethods(Protocol):
    def forward_backward(self, setup: Setup, inputs: StepInputs,
                         scale: float) -> tuple[torch.Tensor | None, Any]: ...

    def optimizer_step(self, setup: Setup) -> bool: ...


def general_step(strategy: StepMethods, setup: Setup, call: Call, loss: LossCall) -> TrainStep:
    """The strategy's ``forward_backward`` (gradients synchronized on an update only,
    where it can skip synchronization), then its ``optimizer_step`` on an update."""
    sync = strategy if isinstance(strategy, BackwardSyncControl) else None

    def step(x: Any, y: Any, sw: torch.Tensor | None, scale: float,
             update: bool) -> tuple[torch.Tensor | None, Any]:
        inputs = StepInputs(x, y, sw, call, loss)
        if sync is None:
            out = strategy.forward_backward(setup, inputs, scale)
        else:
            with sync.no_backward_sync(setup, not update):
                out = strategy.forward_backward(setup, inputs, scale)
        if update:
            strategy.optimizer_step(setup)
        return out

    return step


def plain_step(setup: Setup, call: Call, loss: LossCall) -> TrainStep:
    """``Strategy.forward_backward`` and ``optimizer_step`` with float32's policy and no
    clipping, in one frame: forward, loss, backward of ``loss * scale``, step, zero."""

    def step(x: Any, y: Any, sw: torch.Tensor | None, scale: float,
             update: bool) -> tuple[torch.Tensor | None, Any]:
        y_pred = call(setup.wrapped, x)
        value = loss(y_pred, y, sw)
        (value if scale == 1.0 else value * scale).backward()  # 1.0: one replica, whole batch
        if update:
            optimizer = setup.optimizer
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return value.detach(), y_pred

    return step
