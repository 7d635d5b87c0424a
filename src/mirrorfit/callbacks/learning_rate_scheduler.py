"""LearningRateScheduler: Keras's per-epoch schedule, or a torch scheduler."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from typing import Any

from torch.optim import lr_scheduler

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import chief_print

Schedule = Callable[..., float] | lr_scheduler.LRScheduler


class LearningRateScheduler(Callback):
    """Set the learning rate each epoch from ``schedule``.

    ``schedule`` is either Keras's function ``schedule(epoch, lr) -> new_lr``
    (or ``schedule(epoch)``), called at the start of each epoch (0-based), or a
    ``torch.optim.lr_scheduler`` instance built on ``model.optimizer``, stepped
    at the end of each epoch. The rate the epoch started with is added to the
    logs as ``learning_rate``.

    Every replica sets the same rate: a function's result is taken from the chief
    (one small broadcast per epoch, so even a schedule with randomness agrees);
    a torch scheduler steps identically everywhere. With
    :class:`BackupAndRestore`, a run resumed in the middle of an epoch does not
    apply that epoch's schedule twice, and a torch scheduler's state is restored.

    Args:
        schedule: the function or the torch scheduler.
        verbose: 1 prints each new rate (on the chief).

    Raises:
        TypeError: anything else, or torch's ``ReduceLROnPlateau`` (use
            :class:`mirrorfit.callbacks.ReduceLROnPlateau`).

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> cb = mirrorfit.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
        >>> h = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=3,
        ...               verbose=0, callbacks=[cb])
        >>> h.history["learning_rate"]
        [0.005, 0.0025, 0.00125]
    """

    def __init__(self, schedule: Schedule, verbose: int = 0) -> None:
        super().__init__()
        if isinstance(schedule, lr_scheduler.ReduceLROnPlateau):
            raise TypeError("LearningRateScheduler: torch's ReduceLROnPlateau needs a metric; "
                            "use mirrorfit.callbacks.ReduceLROnPlateau(monitor=...) instead.")
        self.scheduler = schedule if isinstance(schedule, lr_scheduler.LRScheduler) else None
        if self.scheduler is None and not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be a function "
                            f"schedule(epoch, lr) or a torch.optim.lr_scheduler instance; "
                            f"received {type(schedule).__name__}.")
        self.schedule = schedule
        self._fn: Callable[..., float] | None = (
            None if isinstance(schedule, lr_scheduler.LRScheduler) else schedule)
        self.verbose = verbose
        self._applied: int | None = None  # the epoch whose start was handled
        self._epoch_lr = 0.0
        self._restored = False

    def on_train_begin(self, logs: Logs | None = None) -> None:
        assert self.model is not None
        if self.scheduler is not None and self.scheduler.optimizer is not self.model.optimizer:
            raise ValueError("LearningRateScheduler: the torch scheduler was built on another "
                             "optimizer; build it after compile() on model.optimizer, e.g. "
                             "StepLR(model.optimizer, step_size=2).")
        if not self._restored:
            self._applied = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self._applied == epoch:  # resumed mid-epoch: set (and recorded) before the backup
            return
        assert self.model is not None
        groups = self.model.optimizer.param_groups
        if self.scheduler is None:
            self._apply(epoch, groups)
        self._epoch_lr = float(groups[0]["lr"])  # the rate this epoch starts with
        self._applied = epoch

    def _apply(self, epoch: int, groups: list[dict[str, Any]]) -> None:
        assert self.model is not None
        assert self._fn is not None
        lr = _call(self._fn, epoch, float(groups[0]["lr"]))
        strategy = self.model.strategy
        if strategy.num_replicas_in_sync > 1:
            lr = strategy.broadcast_object(lr)  # the chief's value everywhere
        for group in groups:
            group["lr"] = lr
        if self.verbose > 0:
            chief_print(self.model, f"\nEpoch {epoch + 1}: LearningRateScheduler setting "
                                    f"learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None
        if logs is not None:  # the epoch's rate, even if another callback changed it since
            logs["learning_rate"] = self._epoch_lr
        if self.scheduler is not None:
            self.scheduler.step()
            if self.verbose > 0:
                chief_print(self.model, f"\nEpoch {epoch + 1}: {type(self.scheduler).__name__} "
                                        f"set the learning rate to "
                                        f"{self.model.optimizer.param_groups[0]['lr']}.")

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"applied": self._applied, "epoch_lr": self._epoch_lr,
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._applied = None if state["applied"] is None else int(state["applied"])
        self._epoch_lr = float(state["epoch_lr"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._restored = True


def _call(schedule: Callable[..., float], epoch: int, lr: float) -> float:
    """Keras's two signatures: ``schedule(epoch, lr)``, or the older ``schedule(epoch)``."""
    try:
        params = inspect.signature(schedule).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_lr = len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):  # a builtin without a signature
        takes_lr = True
    value = schedule(epoch, lr) if takes_lr else schedule(epoch)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"LearningRateScheduler: schedule({epoch}) must return a learning "
                         f"rate (a float >= 0); received {value!r}.")
    return float(value)
