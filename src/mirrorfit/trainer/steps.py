"""One training, evaluation and prediction step on this replica's share.

The training loss is the **global** mean: a replica's mean over its ``n`` samples
is scaled by ``n * world / N`` (``N`` the global batch), and DDP's all-reduce
divides by ``world``, so the averaged gradient is exactly the gradient of the
mean over the global batch, whatever the split (uneven or empty shares too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mirrorfit.data.batches import LocalBatch
from mirrorfit.trainer.validation import STEP_ERRORS, explain_step_error


def unpack(data: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)`` -> (x, y, sample_weight)."""
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data
    raise ValueError(f"A batch must be (x,), (x, y) or (x, y, sample_weight); received a "
                     f"tuple of {len(data)} elements.")


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True) if value.device != device else value
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def match_weights(sw: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sw`` shaped to multiply ``values`` sample by sample: ``(n,)`` or ``(n, 1)`` weights
    (Keras accepts both) broadcast over ``values``' other dims.

    Raises:
        ValueError: weights whose shape does not fit the per-sample values.
    """
    w = sw
    while w.dim() > values.dim() and w.shape[-1] == 1:
        w = w.squeeze(-1)
    if w.dim() > values.dim() or tuple(w.shape) != tuple(values.shape[:w.dim()]):
        raise ValueError(f"sample_weight of shape {tuple(sw.shape)} does not fit the per-sample "
                         f"values of shape {tuple(values.shape)}; pass one weight per sample, "
                         "shape (n,) or (n, 1).")
    return w.reshape(w.shape + (1,) * (values.dim() - w.dim()))


def call_module(module: nn.Module, x: Any) -> Any:
    if isinstance(x, torch.Tensor):  # the common case first
        return module(x)
    if isinstance(x, Mapping):
        return module(**x)
    if isinstance(x, tuple):
        return module(*x)
    return module(x)


class Steps:
    """Holds what a step needs; the trainer calls ``train``/``evaluate``/``predict``."""

    def __init__(self, module: nn.Module, wrapped: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[..., torch.Tensor], device: torch.device, world: int) -> None:
        self.module = module
        self.wrapped = wrapped
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.world = world
        self._on_host = device.type == "cpu"  # sources hold CPU tensors: nothing to move

    def loss(self, y_pred: Any, y: Any, sw: torch.Tensor | None) -> torch.Tensor:
        if sw is None:
            return self.loss_fn(y_pred, y)
        per_sample = getattr(self.loss_fn, "per_sample", None)
        if per_sample is None:
            raise ValueError("sample_weight needs a loss with per_sample(); use a mirrorfit "
                             "loss or a Keras loss name.")
        per = per_sample(y_pred, y)
        return (per * match_weights(sw, per).to(per.dtype)).mean()

    def forward_loss(self, module: nn.Module, x: Any, y: Any,
                     sw: torch.Tensor | None) -> tuple[torch.Tensor, Any]:
        """The loss and ``module``'s output; a data error gets a note naming the tensors."""
        y_pred = None
        try:
            y_pred = call_module(module, x)
            return self.loss(y_pred, y, sw), y_pred
        except STEP_ERRORS as exc:  # free unless raised; see trainer.validation
            explain_step_error(exc, self.module, x, y, y_pred)
            raise

    def inputs(self, batch: LocalBatch) -> tuple[Any, Any, Any]:
        """(x, y, sample_weight) on this replica's device (sources hold CPU tensors, so a
        CPU replica has nothing to move)."""
        if self._on_host:
            return unpack(batch.data)
        return to_device(unpack(batch.data), self.device)

    def train(self, batch: LocalBatch, denominator: int | None = None,
              update: bool = True) -> tuple[torch.Tensor, Any, Any, Any]:
        """Forward, backward (scaled to the global mean over ``denominator`` samples,
        default the global batch) and, if ``update``, the optimizer step."""
        x, y, sw = self.inputs(batch)
        loss, y_pred = self.forward_loss(self.wrapped, x, y, sw)
        scale = batch.size * self.world / (denominator or batch.global_size)
        (loss if scale == 1.0 else loss * scale).backward()  # 1.0: one replica, full batch
        if update:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), y_pred.detach(), y, sw

    @torch.no_grad()
    def evaluate(self, batch: LocalBatch) -> tuple[torch.Tensor, Any, Any, Any]:
        x, y, sw = to_device(unpack(batch.data), self.device)
        loss, y_pred = self.forward_loss(self.module, x, y, sw)
        return loss, y_pred, y, sw

    @torch.no_grad()
    def predict(self, batch: LocalBatch) -> Any:
        x, _, _ = to_device(unpack(batch.data), self.device)
        try:
            return call_module(self.module, x)
        except STEP_ERRORS as exc:
            explain_step_error(exc, self.module, x)
            raise
