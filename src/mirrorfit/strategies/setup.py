"""What a strategy hands the trainer for one compiled model: the placed module, the
module a training forward calls, the optimizer built on the strategy's parameters,
the precision policy and the gradient clipping.

Only the strategy that made a :class:`Setup` changes it (e.g. DDP's wrapper is
swapped after the first update, or dropped before the process group goes away).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mirrorfit.precision import Precision


@dataclass(frozen=True)
class Clipping:
    """Keras's gradient clipping, applied to the global gradient before the step.

    Args:
        clipnorm: clip each parameter's gradient to this L2 norm.
        clipvalue: clip every gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: scale all gradients so that their joint L2 norm is at most this.

    Raises:
        ValueError: a value that is not a positive number, or both norms at once.
    """

    clipnorm: float | None = None
    clipvalue: float | None = None
    global_clipnorm: float | None = None

    def __post_init__(self) -> None:
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive number or None; received {value!r}.")
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError(f"Pass only one of clipnorm={self.clipnorm!r} and global_clipnorm="
                             f"{self.global_clipnorm!r} (as in Keras): clipnorm clips each "
                             "gradient, global_clipnorm all of them together.")
        active = any(v is not None for v in (self.clipnorm, self.clipvalue, self.global_clipnorm))
        object.__setattr__(self, "active", active)  # read once per step

    active: bool = field(init=False, repr=False, compare=False, default=False)


@dataclass
class StepInputs:
    """One training step's share: inputs, targets, weights, and how to call and score.

    ``call(module, x)`` runs a forward pass (errors explained); ``loss(y_pred, y, sw)``
    is the mean loss over the samples given (sample-weighted when ``sw`` is given).
    """

    x: Any
    y: Any
    sw: torch.Tensor | None
    call: Callable[[nn.Module, Any], Any]
    loss: Callable[[Any, Any, torch.Tensor | None], torch.Tensor]


@dataclass(eq=False)
class Setup:
    """A model as a strategy set it up for training.

    Attributes:
        module: the user's module, on the strategy's device (sharded in place where
            the strategy shards); evaluation and prediction call it.
        placed: what the strategy wrapped it in for training (DDP), or ``module``.
        wrapped: what a training forward calls: ``placed``, compiled under jit_compile.
        optimizer: built on ``module``'s parameters as the strategy left them.
        precision: the precision policy of forward, backward and step.
        clipping: gradient clipping before each step.
        jit_compile: whether ``wrapped`` (and the evaluation module) run under torch.compile.
        private: what the strategy keeps per model (e.g. DDP's first-update check).
    """

    module: nn.Module
    placed: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    precision: Precision
    clipping: Clipping = field(default_factory=Clipping)
    jit_compile: bool = False
    eval_module: nn.Module | None = None
    private: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluator(self) -> nn.Module:
        """What evaluation and prediction call."""
        return self.eval_module if self.eval_module is not None else self.module

    def compile(self) -> None:
        """Put ``placed`` (and the module for evaluation) under ``torch.compile``."""
        self.wrapped = _compiled(self.placed)
        self.eval_module = _compiled(self.module)

    def release(self) -> None:
        """Drop the training wrapper (before the process group is destroyed)."""
        self.placed = self.wrapped = self.module


def _compiled(module: nn.Module) -> nn.Module:
    compiled = torch.compile(module)
    assert isinstance(compiled, nn.Module)  # torch.compile of a module is an OptimizedModule
    return compiled
