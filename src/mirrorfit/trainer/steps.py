"""One training, evaluation and prediction step on this replica's share.

The training loss is the **global** mean: a replica's mean over its ``n`` samples
is scaled by ``n * replicas / N`` (``N`` the global batch; ``data.sharding.loss_scale``),
and the strategy's gradient average divides by ``replicas``, so the averaged
gradient is exactly the gradient of the mean over the global batch, whatever the
split (uneven or empty shares too). The strategy runs the forward and backward
passes (through its precision policy) and the optimizer update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mirrorfit import keras_models
from mirrorfit.data.batches import LocalBatch
from mirrorfit.data.sharding import loss_scale
from mirrorfit.loss_base import one_output, remake
from mirrorfit.strategies.setup import Setup, StepInputs
from mirrorfit.strategies.strategy import Strategy
from mirrorfit.torch_losses import CallableLoss
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
    """One step on this replica's share; the strategy runs forward, backward and update.

    Args:
        setup: what the strategy set up (module, optimizer, precision, clipping).
        strategy: the strategy that made ``setup``.
        loss_fn: ``loss(y_pred, y)``, the batch mean; ``per_sample`` for weights.
    """

    def __init__(self, setup: Setup, strategy: Strategy,
                 loss_fn: Callable[..., torch.Tensor]) -> None:
        self.setup = setup
        self.strategy = strategy
        self.loss_fn = loss_fn
        self.device = strategy.device
        self.replicas = strategy.num_replicas_in_sync
        self._whole = self.replicas == 1
        self._on_host = self.device.type == "cpu"  # sources hold CPU tensors: nothing to move
        self._x: Any = None  # the step's input, for the note on a failing loss
        # a Keras 3 model gets training= and adds its own losses (mirrorfit.keras_models)
        self._call = keras_models.caller(setup.module, call_module)
        self._plain_call = self._call is call_module
        self._model_losses = keras_models.loss_term(setup.module)
        # forward, loss, backward and (on an update) the optimizer step, as the strategy runs them
        self._train_step = strategy.train_function(setup, self.call, self.loss)

    @property
    def module(self) -> nn.Module:
        return self.setup.module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.setup.optimizer

    def loss(self, y_pred: Any, y: Any, sw: torch.Tensor | None) -> torch.Tensor:
        """The mean loss over the share (sample-weighted), plus a Keras model's own
        ``losses`` (regularizers, ``add_loss``); a data error gets a note."""
        try:
            loss = self.loss_fn(y_pred, y) if sw is None else self._weighted(y_pred, y, sw)
            if self._model_losses is None:
                return loss
            extra = self._model_losses()  # a Keras model's own losses
            return loss if extra is None else loss + extra
        except STEP_ERRORS as exc:  # free unless raised; see trainer.validation
            explain_step_error(exc, self.module, self._x, y, y_pred)
            raise
        except AttributeError:  # a built-in loss given a tuple or dict of outputs says so
            if not isinstance(self.loss_fn, CallableLoss):  # a user's function takes them
                one_output(y_pred, f"The loss {self.loss_fn!r}", "loss=lambda y_pred, y: "
                           f"{remake(self.loss_fn, 'mirrorfit.losses')}({{pick}}, y)")
            raise

    def _weighted(self, y_pred: Any, y: Any, sw: torch.Tensor) -> torch.Tensor:
        per_sample = getattr(self.loss_fn, "per_sample", None)
        if per_sample is None:
            raise ValueError("sample_weight needs a loss with per_sample(); use a mirrorfit "
                             "loss or a Keras loss name.")
        per = per_sample(y_pred, y)
        return (per * match_weights(sw, per).to(per.dtype)).mean()

    def call(self, module: nn.Module, x: Any) -> Any:
        """``module``'s output on ``x``; a data error gets a note naming the tensors."""
        try:
            if self._plain_call and isinstance(x, torch.Tensor):  # the common case first
                return module(x)
            return self._call(module, x)
        except STEP_ERRORS as exc:
            explain_step_error(exc, self.module, x)
            raise

    def inputs(self, batch: LocalBatch) -> tuple[Any, Any, Any]:
        """(x, y, sample_weight) on this replica's device (sources hold CPU tensors, so a
        CPU replica has nothing to move)."""
        if self._on_host:
            return unpack(batch.data)
        return to_device(unpack(batch.data), self.device)

    def train(self, batch: LocalBatch, denominator: int | None = None,
              update: bool = True) -> tuple[torch.Tensor | None, Any, Any, Any]:
        """Forward and backward, scaled to the global mean over ``denominator`` samples
        (default the global batch), and on an ``update`` the optimizer step: the
        strategy's :meth:`~mirrorfit.strategies.strategy.Strategy.train_function`."""
        data = batch.data
        if self._on_host and len(data) == 2:  # the common case: (x, y) where it is
            x, y = data
            sw = None
        else:
            x, y, sw = self.inputs(batch)
        self._x = x
        scale = (1.0 if denominator is None and self._whole  # one replica: the share is the batch
                 else loss_scale(batch.size, denominator or batch.global_size, self.replicas))
        loss, y_pred = self._train_step(x, y, sw, scale, update)
        return loss, y_pred, y, sw

    @torch.no_grad()
    def evaluate(self, batch: LocalBatch) -> tuple[torch.Tensor | None, Any, Any, Any]:
        x, y, sw = to_device(unpack(batch.data), self.device)
        self._x = x
        loss, y_pred = self.strategy.forward(self.setup, StepInputs(x, y, sw, self.call,
                                                                    self.loss))
        return loss, y_pred, y, sw

    @torch.no_grad()
    def predict(self, batch: LocalBatch) -> Any:
        x, _, _ = to_device(unpack(batch.data), self.device)
        return self.strategy.forward(self.setup, StepInputs(x, None, None, self.call,
                                                            self.loss))[1]
