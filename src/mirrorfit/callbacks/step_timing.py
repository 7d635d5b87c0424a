"""StepTiming: at the end of ``fit``, where the time of a step went on average.

    Per step, 2 replicas, 34 steps: 5.10 ms = waiting for data 0.31 ms (6%),
    computing 3.92 ms (77%), waiting for the other replicas 0.87 ms (17%)

``fit`` adds this callback on every worker when ``verbose >= 1`` (the chief's
``verbose``, which every worker follows); it measures with two clock reads per
step and prints (chief only):

- **waiting for data**: from the end of one step (``on_train_batch_end``) to the
  start of the next (``on_train_batch_begin``), or from the start of the epoch to
  its first step: fetching the batch, plus the loop's bookkeeping in between.
- **computing** and **waiting for the other replicas**: the time from
  ``on_train_batch_begin`` to ``on_train_batch_end`` (forward, backward with its
  all-reduce, optimizer step, and the batch-end hooks of other callbacks). All
  replicas leave a step's all-reduce together, so a replica that started the
  step ``k`` ms before the last one spent those ``k`` ms waiting: per step, the
  shortest time over the replicas counts as computing, the rest of each
  replica's time as waiting. A replica that computes more slowly than the others
  (or is descheduled mid-step) sets the pace, and that time counts as computing.

The per-step times are gathered once, at the end of ``fit`` (one
``all_gather_object``; 8 bytes per step and replica).
"""

from __future__ import annotations

import sys
import time
from array import array
from typing import Any

import numpy as np

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import is_chief


class StepTiming(Callback):
    """Measure each step; print the average breakdown at the end of ``fit``.

    Args:
        stream: where the chief prints (default stdout).

    Attributes:
        breakdown: after ``fit`` (every worker), the means in seconds per step:
            ``{"steps", "replicas", "data", "compute", "wait"}``; None before.

    Example:
        >>> timing = StepTiming()  # fit adds one itself; see ``breakdown`` afterwards
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream
        self.breakdown: dict[str, float] | None = None
        self._durations = array("d")
        self._data = 0.0
        self._mark = 0.0
        self._begin = 0.0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._durations = array("d")
        self._data = 0.0
        self.breakdown = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        t = time.perf_counter()
        self._data += t - self._mark
        self._begin = t

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        t = time.perf_counter()
        self._durations.append(t - self._begin)
        self._mark = t

    def on_train_end(self, logs: Logs | None = None) -> None:
        assert self.model is not None
        strategy = self.model.strategy
        mine = (self._data, self._durations.tobytes())
        # the same decision on every worker: params["verbose"] is the chief's (fit agrees)
        if self.params.get("verbose", 0) < 1:
            return
        everyone = strategy.all_gather_object(mine) if strategy.num_replicas_in_sync > 1 \
            else [mine]
        self.breakdown = summarize([(d, array("d", b)) for d, b in everyone])
        self._durations = array("d")
        if self.breakdown["steps"] and is_chief(self.model):
            out = self.stream or sys.stdout
            out.write(format_breakdown(self.breakdown) + "\n")
            out.flush()


def summarize(ranks: list[tuple[float, array]]) -> dict[str, float]:
    """Mean seconds per step from each replica's (data seconds, per-step durations)."""
    steps = min(len(d) for _, d in ranks)
    n = len(ranks)
    if steps == 0:
        return {"steps": 0, "replicas": n, "data": 0.0, "compute": 0.0, "wait": 0.0}
    times = np.stack([np.frombuffer(d, dtype=np.float64)[:steps] for _, d in ranks])
    compute = float(times.min(axis=0).mean())  # the replica that started last waited ~0
    data = sum(s for s, _ in ranks) / (n * steps)
    return {"steps": steps, "replicas": n, "data": data, "compute": compute,
            "wait": max(0.0, float(times.mean()) - compute)}


def format_breakdown(b: dict[str, float]) -> str:
    """One line: the step's mean time and its parts, in ms and percent."""
    parts = [("waiting for data", b["data"]), ("computing", b["compute"])]
    if b["replicas"] > 1:
        parts.append(("waiting for the other replicas", b["wait"]))
    total = sum(v for _, v in parts)
    share = ", ".join(f"{name} {v * 1e3:.2f} ms ({100 * v / max(total, 1e-12):.0f}%)"
                      for name, v in parts)
    who = f"{int(b['replicas'])} replicas" if b["replicas"] > 1 else "1 replica"
    return f"Per step, {who}, {int(b['steps'])} steps: {total * 1e3:.2f} ms = {share}"
