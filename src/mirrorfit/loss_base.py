"""The base of every loss: :class:`Loss` (called as ``loss(y_pred, y_true)``, it returns
the batch mean of its ``per_sample`` values) and the shape rules the losses and the
accuracy metrics share. ``mirrorfit.losses`` holds the losses themselves."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["EPSILON", "Loss", "batch_mean", "match_rank"]

EPSILON = 1e-7
"""Clipping bound for probabilities, as Keras's ``backend.epsilon()``."""


class Loss:
    """Base class: subclasses define :meth:`per_sample`; calling returns its batch mean."""

    name: str = "loss"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Loss of each sample, shape ``(batch,)``. Note the order: prediction first."""
        raise NotImplementedError

    def __call__(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of :meth:`per_sample` (0 for an empty batch)."""
        values = self.per_sample(y_pred, y_true)
        return values.sum() / max(values.shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (Keras's ``get_config``): what ``Model.save`` records."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Loss:
        """A loss built from :meth:`get_config`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({fields})"


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """Average every non-batch position: ``(batch, ...) -> (batch,)``."""
    if values.ndim == 0:
        raise ValueError(f"Expected per-sample values with a batch dim, received a scalar "
                         f"(shape {tuple(values.shape)}).")
    if values.ndim == 1:
        return values
    return values.flatten(start_dim=1).mean(dim=1)


def match_rank(y_pred: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras's squeeze-or-expand: ``(batch, 1)`` against ``(batch,)`` lines up."""
    if y_true.ndim == y_pred.ndim - 1:
        y_true = y_true.unsqueeze(-1)
    elif y_pred.ndim == y_true.ndim - 1:
        y_pred = y_pred.unsqueeze(-1)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred and y_true shapes differ: received y_pred {tuple(y_pred.shape)}"
                         f", y_true {tuple(y_true.shape)}; expected equal shapes.")
    return y_pred, y_true.to(y_pred.dtype)
