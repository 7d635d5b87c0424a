"""History: Keras's per-epoch record, returned by ``fit``."""

from __future__ import annotations

from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs


class History(Callback):
    """``history.history`` maps each metric name to its list of per-epoch values."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not getattr(self, "_resuming", False):
            self.history, self.epoch = {}, []
        self._resuming = False

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: list(v) for k, v in self.history.items()},
                "epoch": list(self.epoch)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])
        self._resuming = True
