"""Monitor: the one place that decides whether a monitored value is "better".

ModelCheckpoint, EarlyStopping and ReduceLROnPlateau all watch one key of the
epoch logs. The logs are global values (reduced over replicas) and identical on
every rank, so a decision taken from them alone is the same on every replica.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from mirrorfit.callbacks.callback import Logs

#: names whose value grows when the model gets better ('auto' picks 'max' for them)
MAX_HINTS = ("acc", "auc", "precision", "recall", "fmeasure", "f1")
MODES = ("auto", "min", "max")


def resolve_mode(mode: str, monitor: str) -> str:
    """'min' or 'max' for ``mode`` ('auto': 'max' for accuracy-like names, else 'min').

    Raises:
        ValueError: a mode other than 'auto', 'min' or 'max', echoed.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'auto', 'min' or 'max'; received {mode!r}.")
    if mode in ("min", "max"):
        return mode
    return "max" if any(h in monitor for h in MAX_HINTS) else "min"


class Monitor:
    """Watch ``key`` in the logs and keep the best value seen.

    ``improves(value, reference)`` is Keras's test: in 'min' mode ``value`` must be
    below ``reference - min_delta``, in 'max' mode above ``reference + min_delta``.

    Args:
        key: the logs key, e.g. ``"val_loss"``.
        mode: 'auto', 'min' or 'max'.
        min_delta: the smallest change that counts as an improvement (>= 0).
        owner: the callback's name, for messages.

    Raises:
        ValueError: a bad mode or a negative ``min_delta``.

    Example:
        >>> m = Monitor("val_accuracy", min_delta=0.01)
        >>> m.mode, m.improves(0.5, 0.495), m.improves(0.52, 0.5)
        ('max', False, True)
    """

    def __init__(self, key: str, mode: str = "auto", min_delta: float = 0.0,
                 owner: str = "callback") -> None:
        if not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f"{owner}: min_delta must be a number >= 0; received "
                             f"{min_delta!r}.")
        self.key = key
        self.mode = resolve_mode(mode, key)
        self.min_delta = abs(float(min_delta))
        self.owner = owner
        self.best = self.worst

    @property
    def worst(self) -> float:
        """The starting 'best' value: +inf in 'min' mode, -inf in 'max' mode."""
        return math.inf if self.mode == "min" else -math.inf

    def reset(self, best: float | None = None) -> None:
        self.best = self.worst if best is None else float(best)

    def improves(self, value: float, reference: float | None) -> bool:
        """True when ``value`` beats ``reference`` by more than ``min_delta``."""
        if reference is None:
            return True
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def current(self, logs: Logs | None, warn: bool = True) -> float | None:
        """The monitored value in ``logs``, or None (with one warning) when absent."""
        value = (logs or {}).get(self.key)
        if value is None:
            if warn:
                warnings.warn(f"{self.owner}: the logs hold no {self.key!r} (available: "
                              f"{sorted(logs or {})}); pass validation_data for val_ keys or "
                              "monitor one of those.", stacklevel=3)
            return None
        return float(value)

    def update(self, value: float) -> bool:
        """Record ``value``; True (and it becomes ``best``) when it improves on ``best``."""
        if self.improves(value, self.best):
            self.best = float(value)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
