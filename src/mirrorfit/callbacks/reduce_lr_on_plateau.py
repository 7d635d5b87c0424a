"""ReduceLROnPlateau: Keras's callback; every replica sets the same new rate."""

from __future__ import annotations

from typing import Any

import numpy as np

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import chief_print, is_chief
from mirrorfit.callbacks.monitor import Monitor


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving.

    Keras's semantics: after ``patience`` epochs without an improvement larger
    than ``min_delta``, every parameter group's rate becomes
    ``max(lr * factor, min_lr)``, then ``cooldown`` epochs pass before counting
    again. The rate in use during the epoch is added to the logs as
    ``learning_rate`` (History and CSVLogger record it when listed after this
    callback). The logs are global values, so every replica changes its rate in
    the same epoch to the same value.

    Args:
        monitor: the logs key to watch.
        factor: the multiplier, in (0, 1).
        patience: epochs without improvement before a reduction.
        verbose: 1 prints each reduction (on the chief).
        mode: 'auto', 'min' or 'max'.
        min_delta: a change smaller than this is no improvement.
        cooldown: epochs to wait after a reduction.
        min_lr: the rate never goes below this.

    Raises:
        ValueError: ``factor`` outside (0, 1), negative counts, a bad mode.

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> cb = mirrorfit.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1,
        ...                                            min_delta=10.0)
        >>> h = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=3,
        ...               verbose=0, callbacks=[cb])
        >>> h.history["learning_rate"]
        [0.01, 0.01, 0.005]
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1); received "
                             f"factor={factor!r}.")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an integer >= 0; "
                                 f"received {value!r}.")
        if not min_lr >= 0:
            raise ValueError(f"ReduceLROnPlateau: min_lr must be >= 0; received {min_lr!r}.")
        self._monitor = Monitor(monitor, mode, min_delta, owner="ReduceLROnPlateau")
        self.monitor, self.mode, self.min_delta = monitor, self._monitor.mode, float(min_delta)
        self.factor, self.patience, self.verbose = float(factor), patience, verbose
        self.cooldown, self.min_lr = cooldown, float(min_lr)
        self.wait = 0
        self.cooldown_counter = 0
        self._restored = False

    @property
    def best(self) -> float:
        return self._monitor.best

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not self._restored:
            self.wait, self.cooldown_counter = 0, 0
            self._monitor.reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None
        groups = self.model.optimizer.param_groups
        if logs is not None:
            logs["learning_rate"] = float(groups[0]["lr"])
        current = self._monitor.current(logs, warn=is_chief(self.model))
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.update(current):
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(groups, epoch):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, groups: list[dict[str, Any]], epoch: int) -> bool:
        reduced = False
        for group in groups:
            old = float(group["lr"])
            if old > np.float32(self.min_lr):
                group["lr"] = max(old * self.factor, self.min_lr)
                reduced = True
        if reduced and self.verbose > 0:
            chief_print(self.model, f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning "
                                    f"rate to {groups[0]['lr']}.")
        return reduced

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return {**self._monitor.state_dict(), "wait": self.wait,
                "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._monitor.load_state_dict(state)
        self.wait, self.cooldown_counter = int(state["wait"]), int(state["cooldown_counter"])
        self._restored = True
