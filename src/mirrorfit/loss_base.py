"""The base of every loss: :class:`Loss` (called as ``loss(y_pred, y_true)``, it returns
the batch mean of its ``per_sample`` values) and the shape rules the losses and the
metrics share. ``mirrorfit.losses`` holds the losses themselves.

A model may return a tuple, list or dict of outputs: a loss or metric *function* of the
user's gets it whole, and the built-in ones, which score one tensor, say which output
structure they received and how to pick one (:func:`one_output`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mirrorfit.data.trees import flatten

__all__ = ["EPSILON", "Loss", "batch_mean", "batch_size", "match_rank", "one_output", "remake"]

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


def batch_size(output: Any) -> int:
    """The samples in a model's output: the leading dim of the tensor, or of the first
    tensor in a tuple, list or dict of outputs (0 when there is none)."""
    if isinstance(output, torch.Tensor):
        return int(output.shape[0]) if output.ndim else 0
    first = next((t for t in flatten(output)[0] if isinstance(t, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None and first.ndim else 0


def one_output(y_pred: Any, scorer: str, fix: str) -> torch.Tensor:
    """``y_pred`` when it is one tensor; else a ValueError naming ``scorer`` (a built-in
    loss or metric), the structure the model returned and ``fix``, a way to pick one
    output in which ``{pick}`` stands for e.g. ``y_pred['logits']``."""
    if isinstance(y_pred, torch.Tensor):
        return y_pred
    pick = "y_pred" + (f"[{next(iter(y_pred))!r}]" if isinstance(y_pred, Mapping) and y_pred
                       else "[0]")
    raise ValueError(
        f"{scorer} scores one output tensor, but the model returned {_structure(y_pred)}. "
        f"Pick the output in a function: {fix.replace('{pick}', pick)}; or return one tensor "
        "from forward().") from None


def remake(obj: Any, package: str) -> str:
    """Code that builds ``obj`` again from its ``get_config()``, e.g.
    ``mirrorfit.losses.Huber(delta=1.0)`` for one of ``package``'s own classes."""
    cls = type(obj)
    args = ", ".join(f"{k}={v!r}" for k, v in obj.get_config().items())
    prefix = f"{package}." if cls.__module__.startswith(package) else ""
    return f"{prefix}{cls.__name__}({args})"


def _structure(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a dict with keys {', '.join(repr(k) for k in value)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} outputs"
    return f"a {type(value).__name__}"

