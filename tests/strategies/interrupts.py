"""A callback that interrupts training on every rank at a chosen global step (imported
by the worker scripts of the strategy tests)."""

from __future__ import annotations

from typing import Any

from mirrorfit.callbacks import Callback


class Interrupted(Exception):
    """What :class:`InterruptAt` raises."""


class InterruptAt(Callback):
    """Every rank raises after global step ``step`` (counted over the epochs, from 1),
    at batch end, before a backup at that step is written."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        ctx = self.model.training_context  # type: ignore[union-attr]
        if ctx.epoch * self.params["steps"] + ctx.step == self.step:
            raise Interrupted
