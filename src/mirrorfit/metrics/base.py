"""The metric base class and :class:`Mean`: a state of float64 sums and counts that
one all-reduce SUM makes global (the package docstring says how).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mirrorfit.loss_base import one_output, remake

__all__ = ["Mean", "Metric"]


class Metric:
    """Base class: a weighted mean whose state is ``[weighted total, total weight]``.

    Subclasses define :meth:`values` (one value per sample or per position);
    :meth:`update` accumulates them, optionally weighted by ``sample_weight``.

    Args:
        name: the History key; defaults to the class's Keras name.
    """

    default_name = "metric"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.default_name
        # The hot path adds one float64 scalar per update (the weighted total) and
        # counts unweighted samples in Python: 2 tensor ops per step, like a hand loop.
        self._total = torch.zeros((), dtype=torch.float64)
        self._weight = torch.zeros((), dtype=torch.float64)
        self._n = 0.0

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras's ``get_config``): what ``Model.save`` records."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Metric:
        """A fresh metric built from :meth:`get_config`'s output."""
        return cls(**config)

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Per-sample values, ``(batch, ...)``, whose weighted mean is the metric."""
        raise NotImplementedError

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor,
               sample_weight: torch.Tensor | None = None) -> None:
        """Accumulate one batch; a ``(batch,)`` ``sample_weight`` broadcasts over positions."""
        if not isinstance(y_pred, torch.Tensor):  # the message is built only when it is raised
            fn = self.name if self.name.isidentifier() else "metric"
            one_output(y_pred, f"The metric {self.name}",
                       f"def {fn}(y_pred, y): return {remake(self, 'mirrorfit.metrics')}"
                       f".values({{pick}}, y), then metrics=[{fn}]")
        if not y_pred.requires_grad:  # the trainer passes detached outputs
            self._accumulate(self.values(y_pred, y_true), sample_weight)
            return
        with torch.no_grad():
            self._accumulate(self.values(y_pred, y_true), sample_weight)

    def result(self) -> float:
        """The weighted mean so far; 0.0 before any update (as Keras)."""
        total, count = self.state.tolist()  # a device-to-host sync when the state is on a GPU
        return total / count if count else 0.0

    def reset(self) -> None:
        """Forget all updates (keeps the state's device)."""
        self._total = torch.zeros_like(self._total)
        self._weight = torch.zeros_like(self._weight)
        self._n = 0.0

    @property
    def state(self) -> torch.Tensor:
        """The 1-D float64 state ``[weighted total, total weight]``; all-reduce it with
        SUM, then pass it to :meth:`set_state`."""
        return torch.stack([self._total, self._weight + self._n])

    def set_state(self, state: torch.Tensor) -> None:
        """Replace the state, e.g. by its all-reduced sum over replicas."""
        if state.shape != (2,):
            raise ValueError(f"{self.name} state must have shape (2,), "
                             f"received {tuple(state.shape)}.")
        state = state.detach().to(self._total.device, torch.float64)
        self._total, self._weight, self._n = state[0].clone(), state[1].clone(), 0.0

    def merge(self, other: Metric | torch.Tensor) -> None:
        """Add another metric's state (or a state tensor) to this one."""
        state = other.state if isinstance(other, Metric) else other
        self.set_state(self.state + state.to(self._total.device, torch.float64))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the state, for checkpoints."""
        return {"state": self.state.detach().cpu().clone()}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Restore a state saved by :meth:`state_dict`."""
        self.set_state(state_dict["state"])

    def _to(self, device: torch.device) -> None:
        self._total, self._weight = self._total.to(device), self._weight.to(device)

    def _follow(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` where the state is kept: the state moves to ``t``'s device, except from
        MPS, which has no float64 (there ``t`` comes to the CPU instead)."""
        if t.device.type == "mps":
            t = t.cpu()
        if self._total.device != t.device:
            self._to(t.device)
        return t

    def _accumulate(self, values: torch.Tensor, sample_weight: torch.Tensor | None) -> None:
        values = self._follow(values)
        if sample_weight is None:
            self._add(values.detach())
            return
        values = values.detach().to(torch.float64)
        weight = sample_weight.detach().to(values.device, torch.float64)
        while weight.ndim > values.ndim and weight.shape[-1] == 1:  # (n, 1) weights
            weight = weight.squeeze(-1)
        weight = weight.reshape(weight.shape + (1,) * (values.ndim - weight.ndim))
        weight = weight.expand_as(values)
        self._total += (values * weight).sum()
        self._weight += weight.sum()

    def _hot_values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """:meth:`values` for the trainer's hot path (see :meth:`_add`)."""
        return self.values(y_pred, y_true)

    def _add(self, values: torch.Tensor) -> None:
        """The trainer's hot path: no checks. Only after an :meth:`update` has put the
        state on the device of ``values``, with outputs of the same kind since; each
        check of :meth:`update` costs about 0.2% of a small model's step."""
        # counting a bool tensor is one kernel less than summing it as float64 (~1 us)
        self._total.add_(values.count_nonzero() if values.dtype == torch.bool
                         else values.sum(dtype=torch.float64))
        self._n += values.numel()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """Weighted mean of values, e.g. a loss: ``Mean("loss")``.

    Example:
        >>> m = Mean("loss")
        >>> m.update_value(3.0, 2)  # a batch of 2 whose losses sum to 3
        >>> m.result()
        1.5
    """

    default_name = "mean"

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor | None = None,
               sample_weight: torch.Tensor | None = None) -> None:
        """Accumulate the values in ``y_pred`` (``y_true`` is ignored)."""
        self._accumulate(torch.as_tensor(y_pred), sample_weight)

    def update_value(self, value_sum: float | torch.Tensor, count: float | torch.Tensor) -> None:
        """Add a sum of values and how many (or how much weight) they were."""
        self._total += self._follow(torch.as_tensor(value_sum).detach())
        if isinstance(count, torch.Tensor):
            self._weight += count.detach().to(self._weight.device, torch.float64)
        else:
            self._n += float(count)

    def update_mean(self, mean: torch.Tensor, count: int) -> None:
        """Add a batch's mean over ``count`` samples; its sum is taken in float64, so
        ``update_mean(m, n)`` adds exactly what the trainer's hot path adds."""
        self._add_mean(self._follow(mean.detach()), count)

    def _add_mean(self, mean: torch.Tensor, count: int) -> None:
        """``update_value(mean * count, count)`` without checks, for the trainer's hot
        path (see :meth:`Metric._add`): one fused kernel, the product taken in float64."""
        self._total.add_(mean, alpha=count)
        self._n += count
