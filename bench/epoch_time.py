"""A callback that records each epoch's wall time (shared by the bench scripts whose
jobs train through ``fit``; their workers import it from this folder)."""

from __future__ import annotations

import time

from mirrorfit.callbacks import Callback


class EpochTime(Callback):
    """Appends each epoch's seconds to ``times``."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        self.times.append(time.perf_counter() - self.start)
