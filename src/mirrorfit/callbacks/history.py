"""History: Keras's per-epoch record, returned by ``fit``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import is_chief


class History(Callback):
    """``history.history`` maps each metric name to its list of per-epoch values.

    Example:
        >>> history = model.fit(x, y, epochs=10, validation_split=0.1)  # doctest: +SKIP
        >>> history.plot("history.png")  # doctest: +SKIP
    """

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

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Draw loss and each metric per epoch, train against validation, one panel per
        metric, into ``path`` (written by the chief only). Needs matplotlib:
        ``pip install 'mirrorfit[plot]'``.

        Returns:
            ``path`` as a Path.

        Raises:
            ImportError: matplotlib is missing (the message names the extra).
            ValueError: nothing recorded yet.
        """
        from mirrorfit.plotting import plot_history

        if not is_chief(self.model):
            return Path(path)
        return plot_history(self.history, path, self.epoch, title=title)
