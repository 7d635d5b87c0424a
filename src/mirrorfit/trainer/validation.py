"""Explain a step that failed on the user's data: the tensors' shapes and dtypes
next to what the module expects.

torch reports a bad input from deep inside a layer ("mat1 and mat2 shapes cannot
be multiplied (8x10 and 20x32)"), without saying which tensor is wrong or what
was expected. :func:`explain_step_error` runs only after a step raised (the hot
path pays nothing: a ``try`` costs nothing in Python 3.11+) and adds a note to
the exception, so its type and traceback stay the user's own and the note is
printed right under the error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["STEP_ERRORS", "describe", "expected_input", "explain_step_error"]

#: exceptions a step can raise because of the data (distributed errors are excluded)
STEP_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)

_SHAPE_WORDS = ("shape", "size", "dtype", "dimension", "dim ", "expected", "out of bounds",
                "must have the same", "cannot be multiplied", "channels", "Found dtype")


def describe(value: Any) -> str:
    """``(8, 10) float32`` for a tensor; the same for each member of a tuple or dict."""
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {_dtype(value.dtype)}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


def explain_step_error(exc: BaseException, module: nn.Module, x: Any, y: Any = None,
                       y_pred: Any = None) -> None:
    """Add a note to ``exc`` naming the tensors, their shapes/dtypes and the expectation.

    Adds nothing to distributed errors, to an exception already explained, or to an
    error that neither looks like a shape/dtype problem nor shows a mismatch.
    """
    if (isinstance(exc, dist.DistError) or getattr(exc, "_mirrorfit_explained", False)
            or not hasattr(exc, "add_note")):
        return
    layer, expectation, problems = expected_input(module, x) if y_pred is None else ("", "", [])
    if not problems and not any(word in str(exc) for word in _SHAPE_WORDS):
        return
    stage = "the module's forward" if y_pred is None else "the loss"
    y_text = describe(y) if y_pred is None else _describe_labels(y)
    lines = [f"mirrorfit: {stage} failed on x = {describe(x)}"
             + (f", y = {y_text}" if y is not None else "")
             + (f", y_pred = {describe(y_pred)}" if y_pred is not None else "") + "."]
    if expectation:
        lines.append(f"  The module's first input layer, {layer}, expects x {expectation}.")
    lines += [f"  {p}" for p in problems]
    if y_pred is not None and not isinstance(exc, ValueError):  # ours already say what to fix
        lines.append("  The module ran; check that y fits the loss (class ids in [0, classes) "
                     "for sparse_categorical_crossentropy, y_pred's shape for mse and "
                     "categorical_crossentropy).")
    exc.add_note("\n".join(lines))
    exc._mirrorfit_explained = True  # type: ignore[attr-defined]


def expected_input(module: nn.Module, x: Any) -> tuple[str, str, list[str]]:
    """(layer name, what it expects of x, what in x does not fit) for the first input layer.

    The first layer is the first Linear, ConvNd, Embedding or RNN in registration
    order, which is the forward order of ``nn.Sequential`` and of most modules.
    """
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
            return "", "", []
        label = f"{name or 'module'!r} ({_short_repr(layer)})"
        if isinstance(layer, nn.Linear):
            return label, *_linear(layer, x)
        if isinstance(layer, nn.modules.conv._ConvNd):
            return label, *_conv(layer, x)
        if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
            return label, *_embedding(layer, x)
        if isinstance(layer, nn.RNNBase):
            return label, *_rnn(layer, x)
    return "", "", []


def _linear(layer: nn.Linear, x: Any) -> tuple[str, list[str]]:
    k, dtype = layer.in_features, layer.weight.dtype
    problems = _dtype_problem(x, dtype)
    if isinstance(x, torch.Tensor) and x.ndim >= 1 and x.shape[-1] != k:
        problems.append(f"x's last dim is {x.shape[-1]}, not {k}: give each sample {k} "
                        f"features, or build the layer with in_features={x.shape[-1]}.")
    return f"of shape (batch, ..., {k}) and dtype {_dtype(dtype)}", problems


def _conv(layer: nn.modules.conv._ConvNd, x: Any) -> tuple[str, list[str]]:
    n = len(layer.kernel_size)
    c, dtype = layer.in_channels, layer.weight.dtype
    spatial = ", ".join("DHW"[3 - n:])
    problems = _dtype_problem(x, dtype)
    if isinstance(x, torch.Tensor):
        if x.ndim != n + 2:
            problems.append(f"x has {x.ndim} dims, not {n + 2} (batch, channels, {spatial}).")
        elif x.shape[1] != c:
            hint = (" It looks channels-last: move the channels first, e.g. "
                    "x.transpose(0, 3, 1, 2) for numpy NHWC images."
                    if x.shape[-1] == c else "")
            problems.append(f"x has {x.shape[1]} channels in dim 1, not {c}.{hint}")
    return f"of shape (batch, {c}, {spatial}) and dtype {_dtype(dtype)}", problems


def _embedding(layer: nn.Embedding | nn.EmbeddingBag, x: Any) -> tuple[str, list[str]]:
    n = layer.num_embeddings
    problems: list[str] = []
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.dtype == torch.bool:
            problems.append(f"x is {_dtype(x.dtype)}; an Embedding needs integer indices "
                            "(x.astype('int64')).")
        elif x.numel() and (int(x.min()) < 0 or int(x.max()) >= n):
            problems.append(f"x holds indices from {int(x.min())} to {int(x.max())}, outside "
                            f"[0, {n}): raise num_embeddings or fix the indices.")
    return f"of integer indices in [0, {n})", problems


def _rnn(layer: nn.RNNBase, x: Any) -> tuple[str, list[str]]:
    k = layer.input_size
    order = "(batch, seq" if layer.batch_first else "(seq, batch"
    problems = _dtype_problem(x, layer.all_weights[0][0].dtype)
    if isinstance(x, torch.Tensor) and x.ndim >= 1 and x.shape[-1] != k:
        problems.append(f"x's last dim is {x.shape[-1]}, not input_size={k}.")
    return f"of shape {order}, {k})", problems


def _dtype_problem(x: Any, dtype: torch.dtype) -> list[str]:
    if not isinstance(x, torch.Tensor) or x.dtype == dtype:
        return []
    return [f"x is {_dtype(x.dtype)} but the layer's weights are {_dtype(dtype)}: convert x, "
            f"e.g. x.astype('{_dtype(dtype)}') for numpy or x.to(torch.{_dtype(dtype)})."]


def _describe_labels(y: Any) -> str:
    """Shape and dtype, plus the value range of integer labels."""
    text = describe(y)
    if (isinstance(y, torch.Tensor) and y.numel() and not y.is_floating_point()
            and y.dtype != torch.bool):
        text += f" with values from {int(y.min())} to {int(y.max())}"
    return text


def _short_repr(layer: nn.Module) -> str:
    return f"{type(layer).__name__}({layer.extra_repr()})"


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
