"""Keras's ``fit(class_weight=...)``: a weight per class, applied as per-sample weights
(times ``sample_weight`` where both are given) to the training loss and to
``compile(weighted_metrics=...)``, never to the plain ``metrics``, as Keras does.

The class of a sample is its label: an integer label as it is, a one-hot (or soft) row
by its largest entry, a ``(n, 1)`` label squeezed, a float label rounded (binary
``0.0``/``1.0``). A class missing from the dict weighs 1. Validation data is never
weighted by class.

Example:
    >>> import numpy as np
    >>> class_sample_weight(np.array([0, 1, 1, 2]), {1: 5.0}, None).tolist()
    [1.0, 5.0, 5.0, 1.0]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mirrorfit.data.sources import to_tensor

__all__ = ["class_sample_weight"]


def class_sample_weight(y: Any, class_weight: Any, sample_weight: Any) -> torch.Tensor:
    """Per-sample weights for the labels ``y``: ``class_weight[class]`` (1 for a class
    not in it), times ``sample_weight`` when given.

    Raises:
        ValueError: a ``class_weight`` that is not a dict of class ids to non-negative
            numbers, or labels that name no class (missing, a tuple or dict of targets,
            3 or more dims).
    """
    weights = _checked(class_weight)
    classes = _classes(y)
    table = torch.ones(max(max(weights, default=0), int(classes.max(initial=0))) + 1,
                       dtype=torch.float32)
    for cls, w in weights.items():
        table[cls] = w
    out = table[torch.from_numpy(classes)]
    if sample_weight is None:
        return out
    sw = to_tensor(sample_weight, "sample_weight").to(torch.float32)
    if sw.dim() == 2 and sw.shape[1] == 1:  # Keras's (n, 1) weights
        sw = sw.reshape(-1)
    if sw.dim() == 0 or sw.shape[0] != out.shape[0]:
        got = sw.shape[0] if sw.dim() else "a scalar"
        raise ValueError(f"All inputs must have the same number of samples; received y: "
                         f"{out.shape[0]}, sample_weight: {got}. Pass one weight per sample.")
    # the class weight of each sample over its weights' other dims: a shape that does not
    # fit the samples is refused later, where sample weights without class_weight are
    return out.reshape(out.shape + (1,) * (sw.dim() - 1)) * sw


def _checked(class_weight: Any) -> dict[int, float]:
    if not isinstance(class_weight, Mapping):
        raise ValueError(f"class_weight must be a dict of class ids to weights, e.g. "
                         f"{{0: 1.0, 1: 5.0}}; received {type(class_weight).__name__}.")
    out = {}
    for cls, w in class_weight.items():
        if isinstance(cls, bool) or not isinstance(cls, numbers.Integral) or cls < 0:
            raise ValueError(f"class_weight's keys are class ids (integers >= 0); received "
                             f"{cls!r}. Map each class id to its weight, e.g. {{0: 1.0, 1: 5.0}}.")
        if (isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w)
                or w < 0):
            raise ValueError(f"class_weight[{cls!r}] must be a finite number >= 0; received "
                             f"{w!r}.")
        out[int(cls)] = float(w)
    return out


def _classes(y: Any) -> np.ndarray:
    """The class id of each sample, as Keras reads it from the labels."""
    labels = None if y is None else to_tensor(y, "y")
    if not isinstance(labels, torch.Tensor):
        kind = "no labels" if y is None else f"a {type(labels).__name__} of targets"
        raise ValueError(f"class_weight needs one array of labels y; received {kind}. Pass "
                         "per-sample weights with sample_weight instead.")
    labels = labels.detach().cpu()
    if labels.dim() >= 3 or labels.dim() == 0:
        raise ValueError(f"class_weight needs labels of shape (n,), (n, 1) or one-hot (n, "
                         f"classes); received shape {tuple(labels.shape)}. Pass per-sample "
                         "weights with sample_weight instead.")
    if labels.dim() == 2:
        labels = labels.squeeze(1) if labels.shape[1] == 1 else labels.argmax(1)
    classes = labels.double().round().long().numpy()
    if classes.size and classes.min() < 0:
        raise ValueError(f"class_weight needs class ids >= 0 in y; received labels from "
                         f"{int(classes.min())} to {int(classes.max())}.")
    return classes
