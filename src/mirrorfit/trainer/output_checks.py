"""A check of the model's first training outputs against the loss: logits given to a
loss that expects probabilities.

Keras's cross-entropy losses default to ``from_logits=False``: they take ``y_pred``
as probabilities and clip it to ``[1e-7, 1 - 1e-7]``. A torch module usually ends
in ``nn.Linear`` (logits), and with the default such a model trains to garbage
without a word (issue 16: loss 9.18, accuracy 0.147 on MNIST). The trainer calls
:func:`check_first_outputs` on fit's first batch only, on the chief only; it reads
two numbers from the outputs once, so later steps pay nothing but a flag test.

It warns rather than refuses: Keras warns in the same situation, and outputs that
are unnormalised but non-negative are valid input to Keras's categorical losses
(they divide by the row sum), so a refusal would break models that train correctly.
"""

from __future__ import annotations

from typing import Any

import torch

from mirrorfit import losses
from mirrorfit.advice import warn

__all__ = ["check_first_outputs", "needs_output_check"]

_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; clipping noise stays well below


def needs_output_check(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` is a cross-entropy that takes probabilities (``from_logits=False``)."""
    return (isinstance(loss_fn, (losses.SparseCategoricalCrossentropy,
                                 losses.CategoricalCrossentropy, losses.BinaryCrossentropy))
            and not loss_fn.from_logits)


def check_first_outputs(loss_fn: Any, y_pred: Any) -> bool:
    """Warn (``UserWarning``) if ``y_pred`` cannot be probabilities for ``loss_fn``.

    Args:
        loss_fn: a loss for which :func:`needs_output_check` is true.
        y_pred: the model's outputs for the first training batch (detached).

    Returns:
        False: the check is done (the trainer stores it as "check again?").
    """
    if not isinstance(y_pred, torch.Tensor) or not y_pred.numel() or not y_pred.is_floating_point():
        return False
    low, high = (float(v) for v in torch.aminmax(y_pred.detach()))
    problem = ""
    if low < -_TOLERANCE or high > 1.0 + _TOLERANCE:
        problem = f"values from {low:.4g} to {high:.4g}, outside [0, 1]"
    elif not isinstance(loss_fn, losses.BinaryCrossentropy) and y_pred.ndim >= 2:
        sums = y_pred.detach().sum(dim=-1)
        worst = float((sums - 1.0).abs().max())
        if worst > _TOLERANCE:
            problem = (f"rows summing to {float(sums.min()):.4g}..{float(sums.max()):.4g}, "
                       "not 1")
    if not problem:
        return False
    cls = type(loss_fn).__name__
    squash = "a sigmoid" if isinstance(loss_fn, losses.BinaryCrossentropy) else "a softmax"
    warn(
        f"{loss_fn.name} takes probabilities (from_logits=False, Keras's default), but the "
        f"model's outputs on the first batch have {problem}: they look like logits, and "
        f"training on them goes wrong silently. If the model ends in a plain layer such as "
        f"nn.Linear, compile with loss=mirrorfit.losses.{cls}(from_logits=True); otherwise "
        f"end the model in {squash}.")
    return False
