"""Running loss and metrics of one loop, reduced across replicas exactly.

Every metric keeps its state as float64 sums and counts; the global value is
one all-reduce SUM of the concatenated states away, so accuracy is exact by
counts and the loss is the sample-weighted mean over every sample seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mirrorfit import metrics as metrics_mod
from mirrorfit.data.trees import tree_map
from mirrorfit.strategies.strategy import Strategy


class Tracker:
    """The loss mean plus compiled metrics; ``result()`` gives global logs.

    As in Keras, sample weights (and class weights) weigh the loss and the ``weighted``
    metrics, never the plain ones; a weighted metric named like a plain one (or the
    loss) is logged as ``weighted_<name>``.
    """

    def __init__(self, metrics: Sequence[Any], strategy: Strategy, prefix: str = "",
                 weighted: Sequence[Any] | None = None) -> None:
        self.loss = metrics_mod.Mean(name="loss")
        plain = [metrics_mod.get(m) for m in metrics]
        taken = {self.loss.name, *(m.name for m in plain)}
        extra = [metrics_mod.get(m) for m in weighted or []]
        for m in extra:
            if m.name in taken:
                m.name = f"weighted_{m.name}"
        self.metrics = plain + extra
        self._unweighted = len(plain)  # the first metrics ignore sample weights
        self.strategy = strategy
        self.prefix = prefix
        # metrics that keep Metric's update: after one checked update per reset, the
        # hot path skips the device, kind and dtype checks (see Metric._add)
        self._plain = all(type(m).update is metrics_mod.Metric.update
                          and type(m)._accumulate is metrics_mod.Metric._accumulate
                          for m in self.metrics)
        self._hot = False

    def all(self) -> list[Any]:
        return [self.loss, *self.metrics]

    def reset(self) -> None:
        for m in self.all():
            m.reset()
        self._hot = False

    def update(self, loss_mean: torch.Tensor, y_pred: Any, y_true: Any, n: int,
               sample_weight: torch.Tensor | None = None) -> None:
        """Add one batch: ``loss_mean`` over its ``n`` samples, and the metrics
        (``y_pred`` may still require grad: it is detached here when metrics read it)."""
        if not self.metrics:  # the loss alone; the output is not read (nor detached)
            if self._hot:
                self.loss._add_mean(loss_mean, n)
            else:
                self.loss.update_mean(loss_mean, n)
                self._hot = loss_mean.device.type != "mps"
            return
        if not isinstance(y_pred, torch.Tensor):  # a tuple, list or dict of outputs
            y_pred = tree_map(torch.Tensor.detach, y_pred)
        elif y_pred.requires_grad:
            y_pred = y_pred.detach()
        if self._hot and sample_weight is None:
            self.loss._add_mean(loss_mean, n)
            for m in self.metrics:
                m._add(m._hot_values(y_pred, y_true))
            return
        self.loss.update_mean(loss_mean, n)
        for i, m in enumerate(self.metrics):
            m.update(y_pred, y_true, sample_weight if i >= self._unweighted else None)
        self._hot = (self._plain and sample_weight is None and isinstance(y_pred, torch.Tensor)
                     and y_pred.device.type != "mps" and loss_mean.device == y_pred.device)

    def result(self) -> dict[str, float]:
        """Global values: one all-reduce of every state (call on every replica)."""
        if not self.strategy.distributed:
            return {self.prefix + m.name: float(m.result()) for m in self.all()}
        states = [m.state for m in self.all()]
        sizes = [s.numel() for s in states]
        flat = torch.cat([s.detach().to(torch.float64).cpu() for s in states])
        flat = self.strategy.all_reduce(flat.to(self.strategy._comm_device())).cpu()
        logs: dict[str, float] = {}
        offset = 0
        for m, size in zip(self.all(), sizes, strict=True):
            local = m.state.detach().clone()
            m.set_state(flat[offset:offset + size].clone())
            logs[self.prefix + m.name] = float(m.result())
            m.set_state(local)
            offset += size
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {m.name: m.state.detach().cpu().clone() for m in self.all()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._hot = False  # the states come from a file, on the CPU
        for m in self.all():
            if m.name in state:
                m.set_state(state[m.name].clone())
