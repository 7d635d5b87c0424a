"""Stateful metrics with Keras names, reducible across replicas by one all-reduce.

A metric's whole state is a small 1-D float64 tensor of sums and counts
(``[weighted total, total weight]`` for every metric here). Replicas therefore
agree on the exact global value with a single ``all_reduce(SUM)`` of ``state``
followed by ``set_state``: accuracy is reduced as counts of correct samples,
never as an average of per-replica averages.

Arguments are ``(y_pred, y_true)``, prediction first, as in :mod:`mirrorfit.losses`.
The state lives on the device of the first update's tensors so that updates
stay on the accelerator; only :meth:`Metric.result` reads it back to the host.

Example:
    >>> import torch
    >>> from mirrorfit import metrics
    >>> a, b = metrics.get("accuracy"), metrics.get("accuracy")
    >>> a.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
    >>> b.update(torch.tensor([[0.3, 0.7]]), torch.tensor([1]))
    >>> a.merge(b)  # what an all-reduce SUM of the states does
    >>> a.result()
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from mirrorfit import losses

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "Mean",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
    "get",
]


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

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Per-sample values, ``(batch, ...)``, whose weighted mean is the metric."""
        raise NotImplementedError

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor,
               sample_weight: torch.Tensor | None = None) -> None:
        """Accumulate one batch; a ``(batch,)`` ``sample_weight`` broadcasts over positions."""
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

    def _accumulate(self, values: torch.Tensor, sample_weight: torch.Tensor | None) -> None:
        if values.device.type == "mps":  # MPS has no float64; keep the state on the CPU
            values = values.cpu()
        if self._total.device != values.device:
            self._to(values.device)
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
        total = torch.as_tensor(value_sum).detach()
        if total.device.type == "mps":
            total = total.cpu()
        if self._total.device != total.device:
            self._to(total.device)
        self._total += total
        if isinstance(count, torch.Tensor):
            self._weight += count.detach().to(self._weight.device, torch.float64)
        else:
            self._n += float(count)

    def update_mean(self, mean: torch.Tensor, count: int) -> None:
        """Add a batch's mean over ``count`` samples; its sum is taken in float64, so
        ``update_mean(m, n)`` adds exactly what the trainer's hot path adds."""
        mean = mean.detach()
        if mean.device.type == "mps":
            mean = mean.cpu()
        if self._total.device != mean.device:
            self._to(mean.device)
        self._add_mean(mean, count)

    def _add_mean(self, mean: torch.Tensor, count: int) -> None:
        """``update_value(mean * count, count)`` without checks, for the trainer's hot
        path (see :meth:`Metric._add`): one fused kernel, the product taken in float64."""
        self._total.add_(mean, alpha=count)
        self._n += count


def _squeeze_labels(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
    """Integer labels of shape ``y_pred.shape[:-1]`` (accepts a trailing dim of 1)."""
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true.squeeze(-1)
    if y_true.shape != y_pred.shape[:-1]:
        raise ValueError(f"Sparse labels must have y_pred's shape without its class dim: "
                         f"received y_pred {tuple(y_pred.shape)}, y_true {tuple(y_true.shape)}.")
    return y_true.long()


class SparseCategoricalAccuracy(Metric):
    """Share of samples whose arg-max class equals the integer label."""

    default_name = "sparse_categorical_accuracy"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        predicted = y_pred.argmax(-1)
        if y_true.shape != predicted.shape:  # (batch, 1) labels, or a shape error
            y_true = _squeeze_labels(y_pred, y_true)
        return predicted == y_true


class CategoricalAccuracy(Metric):
    """Share of samples whose arg-max class equals the one-hot label's arg-max."""

    default_name = "categorical_accuracy"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if y_pred.shape != y_true.shape:
            raise ValueError(f"One-hot labels must match y_pred's shape: received y_pred "
                             f"{tuple(y_pred.shape)}, y_true {tuple(y_true.shape)}.")
        return y_pred.argmax(dim=-1) == y_true.argmax(dim=-1)


class BinaryAccuracy(Metric):
    """Share of outputs where ``y_pred > threshold`` equals the 0/1 label.

    Args:
        threshold: probability (or logit, if you pass 0.0) above which a prediction is 1.
    """

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5) -> None:
        super().__init__(name)
        self.threshold = threshold

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = losses._match_rank(y_pred, y_true)
        return (y_pred > self.threshold).to(y_true.dtype) == y_true


class Accuracy(Metric):
    """Keras's ``"accuracy"``: binary, sparse or categorical, chosen from the shapes.

    Binary (threshold 0.5) when ``y_pred`` is 1-D or its last dim is 1; sparse
    categorical when ``y_true`` has one dim fewer than ``y_pred`` or a trailing dim
    of 1; categorical when the shapes match. ``kind`` records the last choice.

    Example:
        >>> import torch
        >>> acc = Accuracy()
        >>> acc.update(torch.tensor([[0.1, 0.9]]), torch.tensor([1]))
        >>> acc.kind, acc.result()
        ('sparse_categorical', 1.0)
    """

    default_name = "accuracy"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.kind: str | None = None
        self._kinds: dict[str, Metric] = {
            "binary": BinaryAccuracy(),
            "sparse_categorical": SparseCategoricalAccuracy(),
            "categorical": CategoricalAccuracy(),
        }

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        self.kind = _accuracy_kind(y_pred, y_true)
        return self._kinds[self.kind].values(y_pred, y_true)

    def _hot_values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if self.kind is None:
            return self.values(y_pred, y_true)
        return self._kinds[self.kind].values(y_pred, y_true)  # the kind of the last update


def _accuracy_kind(y_pred: torch.Tensor, y_true: torch.Tensor) -> str:
    if y_pred.ndim <= 1 or y_pred.shape[-1] == 1:
        return "binary"
    if y_true.ndim == y_pred.ndim - 1 or (y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1):
        return "sparse_categorical"
    if y_true.shape == y_pred.shape:
        return "categorical"
    raise ValueError(f"'accuracy' cannot tell binary, sparse or categorical labels apart: "
                     f"received y_pred {tuple(y_pred.shape)}, y_true {tuple(y_true.shape)}; "
                     f"expected labels of shape (batch,), (batch, 1) or y_pred's shape.")


class SparseTopKCategoricalAccuracy(Metric):
    """Share of samples whose integer label is among the ``k`` highest predictions.

    Args:
        k: how many top classes count as a hit.
    """

    default_name = "sparse_top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        if k < 1:
            raise ValueError(f"k must be a positive integer, received k={k!r}.")
        super().__init__(name)
        self.k = k

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        labels = _squeeze_labels(y_pred, y_true)
        top = y_pred.topk(min(self.k, y_pred.shape[-1]), dim=-1).indices
        return (top == labels.unsqueeze(-1)).any(dim=-1)


class TopKCategoricalAccuracy(SparseTopKCategoricalAccuracy):
    """Share of samples whose one-hot label's class is among the ``k`` highest predictions."""

    default_name = "top_k_categorical_accuracy"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return super().values(y_pred, y_true.argmax(dim=-1))


class MeanSquaredError(Metric):
    """Mean squared error, averaged per sample then over samples."""

    default_name = "mean_squared_error"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return losses.MeanSquaredError().per_sample(y_pred, y_true)


class MeanAbsoluteError(Metric):
    """Mean absolute error, averaged per sample then over samples."""

    default_name = "mean_absolute_error"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return losses.MeanAbsoluteError().per_sample(y_pred, y_true)


class _FunctionMetric(Metric):
    """A function ``fn(y_pred, y_true)``: a batch mean, weighted by the batch's size.

    A batch-mean function cannot apply per-sample weights, so with ``sample_weight``
    its value is weighted by the batch's total weight. A function returning
    per-sample values (``(batch, ...)``) is accumulated like any other metric.
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> None:
        super().__init__(getattr(fn, "__name__", type(fn).__name__))
        self.fn = fn

    def update(self, y_pred: torch.Tensor, y_true: torch.Tensor,
               sample_weight: torch.Tensor | None = None) -> None:
        with torch.no_grad():
            value = torch.as_tensor(self.fn(y_pred, y_true))
        if value.ndim > 0:
            self._accumulate(value, sample_weight)
            return
        weight = (sample_weight.sum() if sample_weight is not None
                  else torch.tensor(float(y_pred.shape[0])))
        value = value.to(torch.float64)
        self._accumulate(value.reshape(1), weight.to(value.device).reshape(1))


_REGISTRY: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
}


def get(identifier: str | Metric | Callable[[torch.Tensor, torch.Tensor], Any]) -> Metric:
    """Resolve a Keras metric name, a :class:`Metric` or a function into a :class:`Metric`.

    Args:
        identifier: a name (``"accuracy"``/``"acc"``, ``"sparse_categorical_accuracy"``,
            ``"categorical_accuracy"``, ``"binary_accuracy"``, ``"top_k_categorical_accuracy"``,
            ``"sparse_top_k_categorical_accuracy"``, ``"mse"``, ``"mae"``, ...), whose
            History key is the string itself, as in Keras (``"acc"`` stays ``"acc"``); a
            :class:`Metric` (returned as is); or a function ``fn(y_pred, y_true)``
            returning the batch mean, kept as a mean weighted by batch size under
            ``fn.__name__``.

    Returns:
        A fresh :class:`Metric` for a name or function.

    Raises:
        ValueError: an unknown name.
        TypeError: an identifier of another type.
    """
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(f"Unknown metric: received {identifier!r}; expected one of "
                             f"{', '.join(map(repr, _REGISTRY))}, a Metric instance or a "
                             f"callable fn(y_pred, y_true) returning the batch mean.")
        metric = _REGISTRY[identifier]()
        metric.name = identifier
        return metric
    if isinstance(identifier, Metric):
        return identifier
    if callable(identifier):
        return _FunctionMetric(identifier)
    raise TypeError(f"Could not interpret metric identifier: received {identifier!r}; "
                    f"expected a name, a Metric or a callable fn(y_pred, y_true).")
