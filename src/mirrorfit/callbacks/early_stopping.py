"""EarlyStopping: Keras's callback; every replica stops in the same epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import chief_print, is_chief
from mirrorfit.callbacks.monitor import Monitor


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving (Keras's semantics).

    Each epoch that does not improve on the best value by more than ``min_delta``
    adds one to ``wait``; when ``wait`` reaches ``patience`` training stops. The
    logs are global values, identical on every replica, so every replica takes
    the same decision in the same epoch (``fit`` also agrees on ``stop_training``).

    Args:
        monitor: the logs key to watch, e.g. ``"val_loss"``.
        min_delta: a change smaller than this is no improvement.
        patience: epochs without improvement before stopping.
        verbose: 1 prints (on the chief) the epoch where training stopped.
        mode: 'auto', 'min' or 'max'.
        baseline: a value to beat: ``wait`` is reset only by epochs that improve
            on the best value *and* on ``baseline``.
        restore_best_weights: at the end of ``fit``, put back the weights of the
            best epoch (kept in host memory, and in the backup).
        start_from_epoch: epochs to wait before watching (a warm-up).

    Raises:
        ValueError: a bad mode, a negative ``min_delta``, ``patience`` or
            ``start_from_epoch``.

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> stop = mirrorfit.callbacks.EarlyStopping("loss", min_delta=10.0, patience=2)
        >>> h = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=9,
        ...               verbose=0, callbacks=[stop])
        >>> h.epoch, stop.stopped_epoch
        ([0, 1, 2], 2)
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__()
        for name, value in (("patience", patience), ("start_from_epoch", start_from_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"EarlyStopping: {name} must be an integer >= 0; received "
                                 f"{value!r}.")
        self._monitor = Monitor(monitor, mode, min_delta, owner="EarlyStopping")
        self.monitor, self.mode, self.min_delta = monitor, self._monitor.mode, float(min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self._restored = False

    @property
    def best(self) -> float:
        return self._monitor.best

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not self._restored:
            self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
            self.best_weights = None
            self._monitor.reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        assert self.model is not None
        if epoch < self.start_from_epoch:
            return
        current = self._monitor.current(logs, warn=is_chief(self.model))
        if current is None:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._monitor.update(current):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._monitor.improves(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            chief_print(self.model, f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            assert self.model is not None
            if self.verbose > 0:
                chief_print(self.model, "Restoring model weights from the end of the best "
                                        f"epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)
        self._restored = False

    def state_dict(self) -> dict[str, Any]:
        weights = None if self.best_weights is None else [torch.from_numpy(w)
                                                          for w in self.best_weights]
        return {**self._monitor.state_dict(), "wait": self.wait,
                "stopped_epoch": self.stopped_epoch, "best_epoch": self.best_epoch,
                "best_weights": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._monitor.load_state_dict(state)
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best_epoch = int(state["best_epoch"])
        weights = state["best_weights"]
        self.best_weights = None if weights is None else [w.cpu().numpy() for w in weights]
        self._restored = True
