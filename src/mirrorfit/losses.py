"""Loss functions with Keras names and Keras semantics.

Every loss is called as ``loss(y_pred, y_true)``, **prediction first**, the
order of ``torch.nn`` losses (``input, target``), not Keras's ``(y_true, y_pred)``.
Calling a loss returns the **mean over the batch** of its per-sample values;
``loss.per_sample(y_pred, y_true)`` returns those values, shape ``(batch,)``.
The trainer relies on the plain mean to weight uneven shards exactly: a shard
of ``n`` samples contributes ``loss * n / global_batch``. An empty batch gives
a zero loss (still attached to the graph) rather than NaN.

A sample's value is averaged over its non-batch positions (a sequence's time
steps, a regression target's outputs), as Keras averages over the last axis.

Example:
    >>> import torch
    >>> from mirrorfit import losses
    >>> loss = losses.get("sparse_categorical_crossentropy", from_logits=True)
    >>> y_pred = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(float(loss(y_pred, torch.tensor([0, 1]))), 4)
    0.1269
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F

from mirrorfit.loss_base import EPSILON, Loss, batch_mean, match_rank
from mirrorfit.naming import unknown_name
from mirrorfit.torch_losses import CallableLoss

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "Huber",
    "KLDivergence",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "get",
]

def _log_probs(y_pred: torch.Tensor, from_logits: bool) -> torch.Tensor:
    """Log-probabilities over the last dim, from logits or (Keras-style) clipped probabilities."""
    if from_logits:
        return F.log_softmax(y_pred, dim=-1)
    probs = y_pred / y_pred.sum(dim=-1, keepdim=True)
    return probs.clamp(EPSILON, 1.0 - EPSILON).log()


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer labels: ``y_pred (batch, ..., C)``, ``y_true (batch, ...)``.

    Args:
        from_logits: ``y_pred`` holds logits (``log_softmax`` is applied) rather than
            probabilities (normalized, clipped to ``[1e-7, 1 - 1e-7]``, then logged).

    Example:
        >>> import torch
        >>> SparseCategoricalCrossentropy()(torch.tensor([[0.5, 0.5]]), torch.tensor([1]))
        tensor(0.6931)
    """

    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def __call__(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        # the common case in one fused kernel (same value as the mean of per_sample); an
        # empty batch, whose mean of nothing is not NaN there, and a batch-size mismatch
        # (ValueError) take the general path, which names the shapes
        if (self.from_logits and y_true.ndim == 1 and y_pred.ndim == 2 and y_true.numel()
                and not y_true.is_floating_point()):
            try:  # torch takes int64 class ids; Keras takes any integer type (int32 ...)
                return F.cross_entropy(y_pred, y_true if y_true.dtype == torch.int64
                                       else y_true.long())
            except (IndexError, RuntimeError) as exc:
                raise _label_error(y_true, y_pred.shape[-1], exc) from None
            except ValueError:
                pass
        return super().__call__(y_pred, y_true)

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
            y_true = y_true.squeeze(-1)
        if y_true.shape != y_pred.shape[:-1]:
            raise ValueError(f"Sparse labels must have y_pred's shape without its class dim: "
                             f"received y_pred {tuple(y_pred.shape)}, "
                             f"y_true {tuple(y_true.shape)}.")
        log_p = _log_probs(y_pred, self.from_logits)
        try:
            picked = log_p.gather(-1, y_true.long().unsqueeze(-1)).squeeze(-1)
        except (IndexError, RuntimeError) as exc:
            raise _label_error(y_true, y_pred.shape[-1], exc) from None
        return batch_mean(-picked)


def _label_error(y_true: torch.Tensor, classes: int, exc: BaseException) -> BaseException:
    """A ValueError naming the labels' range when they are not class ids in [0, classes)."""
    labels = y_true.long()
    if not labels.numel() or (int(labels.min()) >= 0 and int(labels.max()) < classes):
        return exc  # not a label problem: torch's own error
    return ValueError(
        f"Sparse labels must be class ids in [0, {classes}) for y_pred with {classes} classes; "
        f"received y_true of shape {tuple(y_true.shape)} and dtype "
        f"{str(y_true.dtype).removeprefix('torch.')} with values from {int(labels.min())} to "
        f"{int(labels.max())}. Fix the labels (e.g. map them to 0..{classes - 1}) or give the "
        "model's last layer one output per class."
    )


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or soft) labels of ``y_pred``'s shape ``(batch, ..., C)``.

    Args:
        from_logits: ``y_pred`` holds logits rather than probabilities.
        label_smoothing: in ``[0, 1]``; labels become ``y * (1 - s) + s / C``.

    Example:
        >>> import torch
        >>> CategoricalCrossentropy()(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]))
        tensor(0.6931)
    """

    name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1], received {label_smoothing!r}.")
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        if self.label_smoothing:
            num_classes = y_pred.shape[-1]
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return batch_mean(-(y_true * _log_probs(y_pred, self.from_logits)).sum(dim=-1))


class BinaryCrossentropy(Loss):
    """Binary cross-entropy per element, averaged over a sample's outputs.

    Args:
        from_logits: ``y_pred`` holds logits (``binary_cross_entropy_with_logits``)
            rather than probabilities (clipped to ``[1e-7, 1 - 1e-7]``).

    Example:
        >>> import torch
        >>> BinaryCrossentropy()(torch.tensor([0.5]), torch.tensor([1.0]))
        tensor(0.6931)
    """

    name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = from_logits

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        if self.from_logits:
            values = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
        else:
            p = y_pred.clamp(EPSILON, 1.0 - EPSILON)
            values = -(y_true * p.log() + (1.0 - y_true) * (1.0 - p).log())
        return batch_mean(values)


class MeanSquaredError(Loss):
    """Mean of ``(y_pred - y_true) ** 2`` over a sample's outputs."""

    name = "mean_squared_error"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        return batch_mean((y_pred - y_true).square())


class MeanAbsoluteError(Loss):
    """Mean of ``|y_pred - y_true|`` over a sample's outputs."""

    name = "mean_absolute_error"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        return batch_mean((y_pred - y_true).abs())


class Huber(Loss):
    """Huber loss: ``0.5 e**2`` for ``|e| <= delta``, else ``delta * (|e| - 0.5 delta)``.

    Args:
        delta: where the loss turns from quadratic to linear; must be positive.
    """

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        if delta <= 0:
            raise ValueError(f"Huber delta must be positive, received delta={delta!r}.")
        self.delta = delta

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        values = F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta)
        return batch_mean(values)


class KLDivergence(Loss):
    """``sum(y_true * log(y_true / y_pred))`` over the last dim, both clipped to ``[1e-7, 1]``."""

    name = "kl_divergence"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = match_rank(y_pred, y_true)
        t = y_true.clamp(EPSILON, 1.0)
        p = y_pred.clamp(EPSILON, 1.0)
        return batch_mean((t * (t / p).log()).sum(dim=-1))


_REGISTRY: dict[str, type[Loss]] = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "kld": KLDivergence,
    "kl_divergence": KLDivergence,
}
_REGISTRY.update({cls.__name__: cls for cls in set(_REGISTRY.values())})


def get(identifier: str | Loss | type[Loss] | Callable[..., torch.Tensor],
        **kwargs: Any) -> Loss:
    """Resolve a Keras loss name, a :class:`Loss`, or a callable into a :class:`Loss`.

    Args:
        identifier: a Keras name (``"sparse_categorical_crossentropy"``,
            ``"categorical_crossentropy"``, ``"binary_crossentropy"``, ``"mse"`` /
            ``"mean_squared_error"``, ``"mae"`` / ``"mean_absolute_error"``, ``"huber"``,
            ``"kld"`` / ``"kl_divergence"``) or its class name; a :class:`Loss` instance
            (returned as is) or class; or any callable ``fn(y_pred, y_true)``. A
            ``torch.nn`` loss module (e.g. ``nn.CrossEntropyLoss()``) is run with
            ``reduction="none"`` on a shallow copy and averaged over the batch, whatever
            its own ``reduction`` ("mean", "sum" or "none"), so shards weigh exactly (a
            "mean" module without weights, whose mean is that same value, runs its own
            fused mean when the batch allows: see ``mirrorfit.torch_losses``). For
            a module with class ``weight`` or ``ignore_index`` this plain mean differs
            from torch's weighted "mean". Any other callable returning a scalar is
            taken as the batch mean.
        **kwargs: constructor arguments for a name or class, e.g. ``from_logits=True``.

    Returns:
        A :class:`Loss` called as ``loss(y_pred, y_true)``.

    Raises:
        ValueError: an unknown name, or ``kwargs`` given with an instance or callable.
        TypeError: an identifier of another type.
    """
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(unknown_name("loss", identifier,
                                          [k for k in _REGISTRY if k.islower()],
                                          "a Loss instance or a callable fn(y_pred, y_true)"))
        return _REGISTRY[identifier](**kwargs)
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier(**kwargs)
    if kwargs:
        raise ValueError(f"Keyword arguments {sorted(kwargs)} apply only to a loss name or "
                         f"class; received the object {identifier!r}.")
    if isinstance(identifier, Loss):
        return identifier
    if callable(identifier):
        return CallableLoss(cast(Callable[..., torch.Tensor], identifier))
    raise TypeError(f"Could not interpret loss identifier: received {identifier!r}; expected "
                    f"a name, a Loss or a callable fn(y_pred, y_true).")
