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

from collections.abc import Callable
from typing import Any

import torch

from mirrorfit import losses
from mirrorfit.loss_base import batch_size
from mirrorfit.metrics.accuracy import (
    Accuracy,
    BinaryAccuracy,
    CategoricalAccuracy,
    SparseCategoricalAccuracy,
    SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from mirrorfit.metrics.base import Mean, Metric
from mirrorfit.naming import unknown_name

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

    def get_config(self) -> dict[str, Any]:
        return {"fn": self.fn}

    def update(self, y_pred: Any, y_true: torch.Tensor,
               sample_weight: torch.Tensor | None = None) -> None:
        """``fn(y_pred, y_true)``; ``y_pred`` as the model returned it (a tensor, or a
        tuple, list or dict of outputs)."""
        with torch.no_grad():
            value = torch.as_tensor(self.fn(y_pred, y_true))
        if value.ndim > 0:
            self._accumulate(value, sample_weight)
            return
        weight = (sample_weight.sum() if sample_weight is not None
                  else torch.tensor(float(batch_size(y_pred))))
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
            raise ValueError(unknown_name("metric", identifier, list(_REGISTRY),
                                          "a Metric instance or a callable fn(y_pred, y_true) "
                                          "returning the batch mean"))
        metric = _REGISTRY[identifier]()
        metric.name = identifier
        return metric
    if isinstance(identifier, Metric):
        return identifier
    if callable(identifier):
        return _FunctionMetric(identifier)
    raise TypeError(f"Could not interpret metric identifier: received {identifier!r}; "
                    f"expected a name, a Metric or a callable fn(y_pred, y_true).")
