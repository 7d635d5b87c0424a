"""Keras-like progress output, printed by the chief only.

    Epoch 1/2
    469/469 ━━━━━━━━━━━━━━━━━━━━ 6s 13ms/step - accuracy: 0.9245 - loss: 0.2617 - …

On a terminal the bar is redrawn in place; in a log file one line per epoch is
written (Keras's behaviour), so SLURM output files stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs

_WIDTH = 20


def format_logs(logs: Logs) -> str:
    return "".join(f" - {k}: {_num(v)}" for k, v in logs.items())


def _num(v: float) -> str:
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


class ProgbarLogger(Callback):
    """Prints epochs, a progress bar and the global logs (``verbose`` 1 or 2)."""

    def __init__(self, verbose: int = 1, stream: Any = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self._dynamic = False
        self._seen = 0
        self._start = 0.0
        self._last_draw = 0.0
        self._logs: Logs = {}

    def _chief(self) -> bool:
        return self.model is None or self.model.strategy.is_chief

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._dynamic = self.verbose == 1 and getattr(self.stream, "isatty", lambda: False)()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._start = time.perf_counter()
        self._seen = 0
        self._logs = {}
        if self._chief():
            self.stream.write(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}\n")
            self.stream.flush()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self._seen = batch + 1
        if logs:
            self._logs = dict(logs)
        if not self._dynamic:  # verbose=2, or a log file: one line per epoch
            return
        now = time.perf_counter()
        if self._chief() and now - self._last_draw > 0.1:
            self._last_draw = now
            self.stream.write("\r" + self._line(self._seen, now, self._logs))
            self.stream.flush()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if not self._chief():
            return
        now = time.perf_counter()
        steps = self.params.get("steps") or self._seen
        line = self._line(steps, now, dict(logs or {}), final=True)
        samples = self.params.get("samples")
        if samples:
            line += f" - {samples / max(now - self._start, 1e-9):,.0f} samples/s"
        self.stream.write(("\r" if self._dynamic else "") + line + "\n")
        self.stream.flush()

    def _line(self, seen: int, now: float, logs: Logs, final: bool = False) -> str:
        steps = self.params.get("steps")
        elapsed = now - self._start
        if steps:
            filled = int(_WIDTH * min(seen, steps) / steps)
            bar = "━" * filled + ("╸" if filled < _WIDTH else "") + " " * (_WIDTH - filled - 1)
            head = f"{seen:>{len(str(steps))}}/{steps} {bar[:_WIDTH]}"
        else:
            head = f"{seen}"
        per_step = elapsed / max(seen, 1)
        timing = f"{elapsed:.0f}s {per_step * 1e3:.0f}ms/step"
        if not final and steps:
            timing = f"{per_step * (steps - seen):.0f}s eta"
        return f"{head} {timing}{format_logs(logs)}"
