"""The training context: what callbacks, checkpoints and preemption see of a
compiled model, instead of the model's privates.

It holds the strategy, what the strategy set up (module, optimizer, precision), the
trainer's position and stateful parts, the compile arguments, the callbacks of the
running ``fit``, and the stop flag. ``state_dict`` / ``load_state_dict`` cover the
whole training state; the strategy decides how each part is laid out (whole tensors
when replicated, shards when sharded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from mirrorfit.strategies.setup import Setup
    from mirrorfit.strategies.strategy import Strategy


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrainerState(Stateful, Protocol):
    """The trainer's position, as the context reads it."""

    epoch: int
    step: int
    steps_per_update: int


class TrainingContext:
    """A compiled model's training context (``model.training_context``).

    Attributes:
        strategy: how training is distributed.
        setup: the module, optimizer, precision and clipping as the strategy set them up.
        trainer: the loops' position (``epoch``, ``step``, ``steps_per_update``) and state.
        compile_args: the arguments ``compile`` received.
        callbacks: the callbacks of the running (or last) ``fit``.
        stop_training: set by a callback to stop after the current step or epoch.
    """

    def __init__(self, strategy: Strategy, setup: Setup, trainer: TrainerState,
                 compile_args: dict[str, Any]) -> None:
        self.strategy = strategy
        self.setup = setup
        self.trainer = trainer
        self.compile_args = compile_args
        self.callbacks: list[Any] = []
        self.stop_training = False

    @property
    def module(self) -> nn.Module:
        return self.setup.module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.setup.optimizer

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    @property
    def step(self) -> int:
        return self.trainer.step

    @property
    def steps_per_update(self) -> int:
        return self.trainer.steps_per_update

    def state_dict(self) -> dict[str, Any]:
        """Module, optimizer, precision (loss scale) and trainer state; live tensors,
        laid out as the strategy keeps them."""
        return {"module": self.strategy.module_state(self.setup),
                "optimizer": self.strategy.optimizer_state(self.setup),
                "precision": self.setup.precision.state_dict(),
                "trainer": self.trainer.state_dict()}
