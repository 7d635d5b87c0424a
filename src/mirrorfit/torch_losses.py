"""A user's loss function or a ``torch.nn`` loss module as a mirrorfit :class:`Loss`
(``mirrorfit.losses.get`` wraps any callable in :class:`CallableLoss`): the batch mean
of per-sample values, so uneven shards weigh exactly, with torch's own fused "mean" where
it is that same value."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mirrorfit.loss_base import Loss, batch_mean, batch_size

__all__ = ["CallableLoss"]


class CallableLoss(Loss):
    """A user function or ``torch.nn`` loss module, called as ``fn(y_pred, y_true)``."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)
        # A torch loss module computes per-element values when reduction="none";
        # a shallow copy shares its parameters and buffers (e.g. class weights).
        self._unreduced: Callable[..., torch.Tensor] | None = None
        if isinstance(fn, nn.Module) and isinstance(getattr(fn, "reduction", None), str):
            unreduced: Any = copy.copy(fn)
            unreduced.reduction = "none"
            self._unreduced = unreduced
        self._fused = _fused_mean_kind(fn)


    def get_config(self) -> dict[str, Any]:
        return {"fn": self.fn}

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return self._per_sample(self._call(y_pred, y_true), y_pred)

    def __call__(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if self._fused is not None and _fused_mean_fits(self._fused, y_pred, y_true):
            fused = _fused_mean(self._fused, self.fn, y_pred, y_true)
            if fused is not None:
                return fused  # torch's own "mean": the same value, one kernel
        values = self._call(y_pred, y_true)
        if values.ndim == 0 and self._unreduced is None:
            return values  # a plain function's own batch mean
        values = self._per_sample(values, y_pred)
        return values.sum() / max(values.shape[0], 1)

    def _call(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (self._unreduced or self.fn)(y_pred, y_true)

    def _per_sample(self, values: torch.Tensor, y_pred: Any) -> torch.Tensor:
        n = batch_size(y_pred)  # y_pred: a tensor, or the model's tuple or dict of outputs
        if values.ndim == 0 or values.shape[0] != n:
            raise TypeError(f"{self.name} returned shape {tuple(values.shape)}, not per-sample "
                            f"values for a batch of {n}; per_sample needs a "
                            f"function returning (batch, ...) values or a torch loss module.")
        return batch_mean(values)


# torch loss modules whose "mean" reduction is the plain mean over samples of the
# per-sample means, as the wrapper computes it (class-index targets: none ignored)
_ELEMENTWISE = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss,
                nn.BCEWithLogitsLoss)
_CLASS_INDEX = (nn.CrossEntropyLoss, nn.NLLLoss)


def _fused_mean_kind(fn: Any) -> str | None:
    """``"elementwise"`` or ``"class_index"`` when ``fn``'s own mean reduction may stand
    in for the per-sample mean (no class or positive weights); else None."""
    if (getattr(fn, "reduction", None) != "mean" or getattr(fn, "weight", None) is not None
            or getattr(fn, "pos_weight", None) is not None):
        return None
    if type(fn) in _ELEMENTWISE:
        return "elementwise"
    return "class_index" if type(fn) in _CLASS_INDEX else None


def _fused_mean_fits(kind: str, y_pred: torch.Tensor, y_true: torch.Tensor) -> bool:
    """Whether ``fn``'s "mean" may stand in for the per-sample mean of this batch: a
    non-empty batch; same shapes (elementwise); integer targets on the CPU (class
    index; on a GPU a target out of range is a device-side assert, not an error the
    wrapper can catch, so the wrapper's way stays)."""
    if not (isinstance(y_pred, torch.Tensor) and isinstance(y_true, torch.Tensor)
            and y_pred.ndim > 0 and y_pred.shape[0] > 0):
        return False
    if kind == "elementwise":
        return y_pred.shape == y_true.shape
    return (y_true.device.type == "cpu" and not y_true.is_floating_point()
            and y_true.shape[:1] == y_pred.shape[:1])


# an ignore_index no class can have (torch takes an int64)
_NO_CLASS = -(2**63)


def _fused_mean(kind: str, fn: Any, y_pred: torch.Tensor,
                y_true: torch.Tensor) -> torch.Tensor | None:
    """``fn``'s own mean; None for a class-index batch with a target equal to
    ``fn.ignore_index``.

    torch's mean leaves such targets out of its count, the per-sample mean counts them
    as 0. Instead of scanning the targets for it every step (a kernel and a sync), the
    loss runs with an ``ignore_index`` no class can have: such a target is then out of
    range, torch's bounds check raises, and the per-sample path takes the batch (it
    raises again there for a target that is out of range for other reasons)."""
    if kind == "elementwise":
        return fn(y_pred, y_true)
    try:
        if isinstance(fn, nn.CrossEntropyLoss):
            return F.cross_entropy(y_pred, y_true, ignore_index=_NO_CLASS,
                                   label_smoothing=fn.label_smoothing)
        return F.nll_loss(y_pred, y_true, ignore_index=_NO_CLASS)
    except IndexError:
        return None
