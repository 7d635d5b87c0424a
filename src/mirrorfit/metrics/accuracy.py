"""Accuracy metrics: each value is 1 for a correct sample, so the state counts."""

from __future__ import annotations

from typing import Any

import torch

from mirrorfit.loss_base import match_rank
from mirrorfit.metrics.base import Metric

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
]


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

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
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

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        labels = _squeeze_labels(y_pred, y_true)
        top = y_pred.topk(min(self.k, y_pred.shape[-1]), dim=-1).indices
        return (top == labels.unsqueeze(-1)).any(dim=-1)


class TopKCategoricalAccuracy(SparseTopKCategoricalAccuracy):
    """Share of samples whose one-hot label's class is among the ``k`` highest predictions."""

    default_name = "top_k_categorical_accuracy"

    def values(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return super().values(y_pred, y_true.argmax(dim=-1))
