"""Keras 3 models (``KERAS_BACKEND=torch``) as first-class modules of :class:`mirrorfit.Model`.

A Keras 3 model on the torch backend *is* a ``torch.nn.Module``, so mirrorfit can
train it as any module, with four differences that this module takes care of:

- **training=.** Keras layers choose their mode from the ``training`` argument of
  the call, not from ``module.train()``: without it ``Dropout`` does nothing and
  ``BatchNormalization`` never updates its moving statistics. The steps call a
  Keras model as ``model(x, training=module.training)``; the trainer puts the
  module in training mode for fit and in eval mode for evaluate and predict. The
  dummy sample of an empty share (``data.batches``) runs with ``training=False``
  so it adds nothing to unsynchronised statistics.
- **model.losses.** Regularizers and ``add_loss`` terms are added to the loss, in
  training and in evaluation, as Keras does.
- **BatchNormalization across replicas.** Keras's moving statistics are variables
  (torch parameters without gradient), not buffers, so DDP would let each replica
  keep its own. Under ``MirroredStrategy(sync_batchnorm=True)`` each Keras
  ``BatchNormalization`` computes its batch moments over the global batch (one
  all-reduce of float64 sums, weighted by sample count, as
  :mod:`mirrorfit.strategies.sync_batchnorm`), so every replica updates the same
  moving statistics as one replica would. Without it, compiling a model with a
  trainable Keras BatchNormalization on several replicas is refused, naming the fix.
- **compile's arguments.** A Keras optimizer, loss or metric object cannot drive a
  torch training step (a Keras loss also takes ``(y_true, y_pred)``, the reverse of
  mirrorfit's order): compile refuses it and names what to pass instead.

Nothing here imports Keras: a module is recognised by its classes' module names,
so plain torch users never pay Keras's import time.

Example:
    >>> import os; os.environ.setdefault("KERAS_BACKEND", "torch")  # doctest: +SKIP
    >>> import keras, mirrorfit                                     # doctest: +SKIP
    >>> net = keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)])  # doctest: +SKIP
    >>> model = mirrorfit.Model(net)                                # doctest: +SKIP
    >>> model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mirrorfit.strategies import sync_batchnorm

__all__ = ["caller", "check_batchnorm", "check_compile_arguments", "convert_sync_batchnorm",
           "is_keras_model", "is_keras_object", "loss_term", "matching_state"]


def is_keras_object(obj: Any) -> bool:
    """Whether ``obj`` (a function, a class or an instance) comes from the ``keras`` package."""
    if _is_function(obj):
        return str(getattr(obj, "__module__", "") or "").startswith("keras")
    cls = obj if isinstance(obj, type) else type(obj)
    return any(str(getattr(c, "__module__", "")).startswith("keras.") for c in cls.__mro__)


def _is_function(obj: Any) -> bool:
    return type(obj).__name__ in ("function", "builtin_function_or_method")


def is_keras_model(module: Any) -> bool:
    """Whether ``module`` is a Keras 3 layer or model (a torch module on the torch backend)."""
    return isinstance(module, nn.Module) and is_keras_object(module)


# --- calling the model ----------------------------------------------------------------------
def caller(module: nn.Module, plain: Callable[[nn.Module, Any], Any]
           ) -> Callable[[nn.Module, Any], Any]:
    """How the steps call ``module`` (or its DDP wrapper): ``plain`` for a torch module;
    for a Keras model, ``target(x, training=...)`` with ``x`` passed whole (Keras takes a
    tuple or dict of inputs as one argument)."""
    if not is_keras_model(module):
        return plain

    def call(target: nn.Module, x: Any) -> Any:
        return target(x, training=module.training and not _weightless(module))

    return call


def _weightless(module: nn.Module) -> bool:
    """An empty share's dummy forward, unless its BatchNorms are synced (they must still
    meet the other replicas' all-reduce, with weight 0)."""
    return (getattr(sync_batchnorm._state, "weightless", False)
            and not getattr(module, "_mirrorfit_synced_bn", False))


def loss_term(module: nn.Module) -> Callable[[], torch.Tensor | None] | None:
    """For a Keras model, a function giving the sum of ``module.losses`` (regularizers,
    ``add_loss``) or None when there are none; None for a torch module."""
    if not is_keras_model(module):
        return None

    def total() -> torch.Tensor | None:
        terms: list[torch.Tensor] = list(getattr(module, "losses", ()))
        if not terms:
            return None
        return functools.reduce(torch.add, terms)

    return total


# --- BatchNormalization ---------------------------------------------------------------------
def _keras_batchnorms(module: nn.Module) -> Iterator[Any]:
    flatten = getattr(module, "_flatten_layers", None)
    if flatten is None:
        return iter(())
    return (layer for layer in flatten(include_self=True, recursive=True)
            if type(layer).__name__ == "BatchNormalization" and is_keras_object(layer))


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Make every Keras ``BatchNormalization`` in ``module`` compute its training moments
    over all replicas (in place; weights and variables are unchanged). Returns ``module``."""
    if not is_keras_model(module):
        return module
    for layer in _keras_batchnorms(module):
        if layer.renorm:
            raise ValueError(f"{layer.name}: BatchNormalization(renorm=True) cannot be "
                             "synchronised by mirrorfit; use renorm=False or sync_batchnorm=False "
                             "on one replica.")
        synced = functools.partial(_synced_moments, layer, layer._moments, process_group)
        object.__setattr__(layer, "_moments", synced)
        object.__setattr__(layer, "_mirrorfit_synced", True)
    object.__setattr__(module, "_mirrorfit_synced_bn", True)
    return module


def _synced_moments(layer: Any, local: Callable[..., Any], group: Any,
                    inputs: torch.Tensor, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras's ``_moments`` over every replica's samples (biased variance, as Keras)."""
    if mask is not None or sync_batchnorm._group_size(group) < 2:
        return local(inputs, mask)  # one replica, or a mask: Keras's own moments
    axes = list(layer._reduction_axes)
    channels = inputs.numel() // max(1, _count(inputs, axes))
    weight = 0.0 if getattr(sync_batchnorm._state, "weightless", False) else 1.0
    x64 = inputs.to(torch.float64)
    sums = torch.cat([x64.sum(axes).reshape(-1) * weight,
                      (x64 * x64).sum(axes).reshape(-1) * weight,
                      x64.new_full((1,), weight * _count(inputs, axes))])
    total = sync_batchnorm._AllReduceSum.apply(sums, group or torch.distributed.group.WORLD)
    count = total[-1].clamp(min=1.0)
    mean = total[:channels] / count
    var = (total[channels:2 * channels] / count - mean * mean).clamp(min=0.0)
    return mean.to(inputs.dtype), var.to(inputs.dtype)


def _count(x: torch.Tensor, axes: list[int]) -> int:
    n = 1
    for a in axes:
        n *= x.shape[a]
    return n


def check_batchnorm(module: nn.Module, replicas: int) -> None:
    """Refuse a trainable Keras BatchNormalization that is not synchronised on several
    replicas: its moving statistics would differ from replica to replica.

    Raises:
        ValueError: naming the layers and ``MirroredStrategy(sync_batchnorm=True)``.
    """
    if replicas < 2 or not is_keras_model(module):
        return
    loose = [layer.name for layer in _keras_batchnorms(module)
             if layer.trainable and not getattr(layer, "_mirrorfit_synced", False)]
    if loose:
        raise ValueError(
            f"Keras BatchNormalization layers {loose} on {replicas} replicas: Keras keeps their "
            "moving statistics in variables, which each replica would update from its own "
            "share only, so the replicas (and the saved model) would disagree. Create the "
            "strategy with MirroredStrategy(..., sync_batchnorm=True): the statistics are then "
            "computed over the global batch, as on one device.")


# --- state dicts --------------------------------------------------------------------------
_NUMBERED = re.compile(r"^(.*?)(?:_(\d+))?$")


def matching_state(module: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` keyed as ``module.state_dict()`` when it comes from the same Keras
    architecture built under other automatic names.

    Keras names layers and models with a process-wide counter (``dense``, ``dense_1``,
    ...; ``sequential_2`` for the third Sequential), and those names are the torch
    parameter keys. A model rebuilt in the same process (``load_model``,
    ``restore_or_create``, a notebook) gets other keys than the saved one. Each numbered
    name is replaced by its rank among the names with the same stem on both sides; if
    the two key sets then agree, the saved values are given the module's keys. Anything
    else (a torch module, another architecture) returns ``state`` unchanged, for the
    usual checks to report.
    """
    if not is_keras_model(module):
        return state
    own = list(module.state_dict())
    if set(own) == set(state) or len(own) != len(state):
        return state
    own_canon, saved_canon = _canonical(own), _canonical(list(state))
    if len(set(own_canon)) != len(own) or set(own_canon) != set(saved_canon):
        return state
    by_canon = dict(zip(saved_canon, state, strict=True))
    return {key: state[by_canon[canon]] for key, canon in zip(own, own_canon, strict=True)}


def _canonical(keys: list[str]) -> list[str]:
    split = [re.split(r"([./])", key) for key in keys]
    numbers: dict[tuple[int, str], set[int]] = {}
    for parts in split:
        for i, part in enumerate(parts):
            stem, number = _numbered(part)
            numbers.setdefault((i, stem), set()).add(number)
    ranks = {k: sorted(v) for k, v in numbers.items()}
    out = []
    for parts in split:
        canon = []
        for i, part in enumerate(parts):
            stem, number = _numbered(part)
            canon.append(f"{stem}#{ranks[(i, stem)].index(number)}")
        out.append("".join(canon))
    return out


def _numbered(part: str) -> tuple[str, int]:
    match = _NUMBERED.match(part)
    assert match is not None  # the pattern matches any string
    return match.group(1), int(match.group(2)) if match.group(2) else 0


# --- compile's arguments --------------------------------------------------------------------
def check_compile_arguments(optimizer: Any, loss: Any, metrics: Any) -> None:
    """Refuse Keras optimizer, loss and metric objects, naming mirrorfit's equivalent.

    Raises:
        TypeError: a Keras object, with what to pass instead.
    """
    if is_keras_object(optimizer):
        name = type(optimizer).__name__
        raise TypeError(
            f"compile received a Keras optimizer ({name}); mirrorfit steps torch optimizers. "
            f"Pass mirrorfit.optimizers.{name}(...) with the same arguments (learning_rate, "
            f"clipnorm, ...), or its name, e.g. optimizer={name.lower()!r}.")
    if is_keras_object(loss):
        raise TypeError(f"compile received a Keras loss ({_label(loss)}); Keras losses take "
                        f"(y_true, y_pred), mirrorfit's (y_pred, y_true). Pass "
                        f"{_mirrorfit_loss(loss)}.")
    for metric in metrics or ():
        if is_keras_object(metric):
            raise TypeError(f"compile received a Keras metric ({_label(metric)}); pass its "
                            "name instead, e.g. metrics=['accuracy'], or a mirrorfit.metrics "
                            "object.")


def _label(obj: Any) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def _mirrorfit_loss(loss: Any) -> str:
    """``mirrorfit.losses.X(from_logits=...)`` for a Keras loss object, or its name."""
    from mirrorfit import losses

    if _is_function(loss):
        return f"loss={loss.__name__!r}"
    name = type(loss).__name__
    if name not in losses.__all__:
        return "a mirrorfit loss name or mirrorfit.losses object"
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    args = ", ".join(f"{k}={config[k]!r}" for k in ("from_logits", "label_smoothing", "delta")
                     if config.get(k) not in (None, 0.0, False))
    return f"mirrorfit.losses.{name}({args})"
