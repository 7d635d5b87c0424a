"""LearningRateWarmup: ramp the learning rate up over the first steps of ``fit``."""

from __future__ import annotations

from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs

__all__ = ["LearningRateWarmup", "check_warmup", "warmup_factor"]


def warmup_factor(step: int, warmup_steps: int, start_factor: float = 0.0) -> float:
    """Multiplier of the target rate at optimizer step ``step`` (0-based).

    ``start_factor + (1 - start_factor) * min(1, (step + 1) / warmup_steps)``: with the
    default ``start_factor=0`` the first step uses 1/warmup_steps of the rate and step
    ``warmup_steps - 1`` the full rate (Goyal et al.'s gradual warmup).
    """
    if warmup_steps <= 0:
        return 1.0
    return start_factor + (1.0 - start_factor) * min(1.0, (step + 1) / warmup_steps)


def check_warmup(warmup_steps: int, start_factor: float) -> None:
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0; received {warmup_steps!r}.")
    if not 0.0 <= start_factor <= 1.0:
        raise ValueError(f"the warmup must start between 0 and the target rate (factor in "
                         f"[0, 1]); received a start factor of {start_factor!r}.")


class LearningRateWarmup(Callback):
    """Ramp the learning rate up to ``target_lr`` over the first ``warmup_steps`` batches.

    Step ``s`` of fit (counted over epochs) uses ``target_lr * warmup_factor(s, ...)``;
    after the warmup the rate stays at ``target_lr`` (and is not touched again).

    Args:
        target_lr: the rate after warmup, e.g. ``scaled_learning_rate(...)``.
        warmup_steps: batches of warmup (optimizer steps unless ``steps_per_update > 1``).
        start_factor: see :func:`warmup_factor` (default 0: start at target/warmup_steps).

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1))
        >>> model.compile(torch.optim.SGD(model.module.parameters(), lr=0.1), "mse")
        >>> warm = mirrorfit.callbacks.LearningRateWarmup(target_lr=0.4, warmup_steps=4)
        >>> _ = model.fit(np.zeros((16, 2), "float32"), np.zeros((16, 1), "float32"),
        ...               batch_size=4, epochs=2, verbose=0, callbacks=[warm])
        >>> [round(lr, 6) for lr in warm.history], model.optimizer.param_groups[0]["lr"]
        ([0.1, 0.2, 0.3, 0.4], 0.4)
    """

    def __init__(self, target_lr: float, warmup_steps: int, start_factor: float = 0.0) -> None:
        super().__init__()
        check_warmup(warmup_steps, start_factor)
        if not target_lr > 0:
            raise ValueError(f"target_lr must be > 0; received {target_lr!r}.")
        self.target_lr, self.warmup_steps, self.start_factor = target_lr, warmup_steps, start_factor
        self.step = 0
        self.history: list[float] = []
        self._restored = False

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not self._restored:  # a backup restored before this hook ran keeps its step
            self.step = 0
            self.history = []

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._restored = False

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        if self.step > self.warmup_steps:
            return
        lr = self.target_lr * warmup_factor(self.step, self.warmup_steps, self.start_factor)
        assert self.model is not None
        for group in self.model.optimizer.param_groups:
            group["lr"] = lr
        if self.step < self.warmup_steps:
            self.history.append(lr)
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self._restored = True
