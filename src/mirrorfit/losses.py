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

import copy
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from mirrorfit.naming import unknown_name

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


def _batch_mean(values: torch.Tensor) -> torch.Tensor:
    """Average every non-batch position: ``(batch, ...) -> (batch,)``."""
    if values.ndim == 0:
        raise ValueError(f"Expected per-sample values with a batch dim, received a scalar "
                         f"(shape {tuple(values.shape)}).")
    if values.ndim == 1:
        return values
    return values.flatten(start_dim=1).mean(dim=1)


def _match_rank(y_pred: torch.Tensor, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras's squeeze-or-expand: ``(batch, 1)`` against ``(batch,)`` lines up."""
    if y_true.ndim == y_pred.ndim - 1:
        y_true = y_true.unsqueeze(-1)
    elif y_pred.ndim == y_true.ndim - 1:
        y_pred = y_pred.unsqueeze(-1)
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred and y_true shapes differ: received y_pred {tuple(y_pred.shape)}"
                         f", y_true {tuple(y_true.shape)}; expected equal shapes.")
    return y_pred, y_true.to(y_pred.dtype)


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
            try:
                return F.cross_entropy(y_pred, y_true)
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
        return _batch_mean(-picked)


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
        y_pred, y_true = _match_rank(y_pred, y_true)
        if self.label_smoothing:
            num_classes = y_pred.shape[-1]
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        return _batch_mean(-(y_true * _log_probs(y_pred, self.from_logits)).sum(dim=-1))


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
        y_pred, y_true = _match_rank(y_pred, y_true)
        if self.from_logits:
            values = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
        else:
            p = y_pred.clamp(EPSILON, 1.0 - EPSILON)
            values = -(y_true * p.log() + (1.0 - y_true) * (1.0 - p).log())
        return _batch_mean(values)


class MeanSquaredError(Loss):
    """Mean of ``(y_pred - y_true) ** 2`` over a sample's outputs."""

    name = "mean_squared_error"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = _match_rank(y_pred, y_true)
        return _batch_mean((y_pred - y_true).square())


class MeanAbsoluteError(Loss):
    """Mean of ``|y_pred - y_true|`` over a sample's outputs."""

    name = "mean_absolute_error"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = _match_rank(y_pred, y_true)
        return _batch_mean((y_pred - y_true).abs())


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
        y_pred, y_true = _match_rank(y_pred, y_true)
        values = F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta)
        return _batch_mean(values)


class KLDivergence(Loss):
    """``sum(y_true * log(y_true / y_pred))`` over the last dim, both clipped to ``[1e-7, 1]``."""

    name = "kl_divergence"

    def per_sample(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        y_pred, y_true = _match_rank(y_pred, y_true)
        t = y_true.clamp(EPSILON, 1.0)
        p = y_pred.clamp(EPSILON, 1.0)
        return _batch_mean((t * (t / p).log()).sum(dim=-1))


class _CallableLoss(Loss):
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

    def _per_sample(self, values: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        if values.ndim == 0 or values.shape[0] != y_pred.shape[0]:
            raise TypeError(f"{self.name} returned shape {tuple(values.shape)}, not per-sample "
                            f"values for a batch of {y_pred.shape[0]}; per_sample needs a "
                            f"function returning (batch, ...) values or a torch loss module.")
        return _batch_mean(values)


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
            fused mean when the batch allows: see ``_fused_mean_fits``). For
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
        return _CallableLoss(cast(Callable[..., torch.Tensor], identifier))
    raise TypeError(f"Could not interpret loss identifier: received {identifier!r}; expected "
                    f"a name, a Loss or a callable fn(y_pred, y_true).")
