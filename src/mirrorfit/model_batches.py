"""Keras's one-batch methods and ``count_params``, on top of ``fit``, ``evaluate`` and
``predict``: the batch given is the **global** batch (split over the replicas as any
batch of ``fit`` is), and every replica must make the same call.

``train_on_batch`` is one optimizer step on the batch: ``fit`` over it with
``batch_size`` the batch's length, no shuffling, no callbacks, no output, and
``model.history`` left as it was. Its metrics cover that batch alone (Keras 2's default,
``reset_metrics=True``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from torch import nn

from mirrorfit.callbacks.history import History
from mirrorfit.data.sources import leading_length, to_tensor
from mirrorfit.summary import count_params

__all__ = ["BatchMethods", "keras_result"]


class _Loops(Protocol):
    module: nn.Module
    history: History | None

    def fit(self, x: Any = ..., y: Any = ..., batch_size: int | None = ..., epochs: int = ...,
            verbose: int | str = ..., **kwargs: Any) -> History: ...

    def evaluate(self, x: Any = ..., y: Any = ..., batch_size: int | None = ...,
                 verbose: int | str = ..., **kwargs: Any) -> Any: ...

    def predict(self, x: Any, batch_size: int | None = ..., verbose: int | str = ...) -> Any: ...


class BatchMethods:
    """``train_on_batch``, ``test_on_batch``, ``predict_on_batch``, ``count_params``."""

    def train_on_batch(self: _Loops, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: Mapping[int, float] | None = None,
                       return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """One optimizer step on the batch ``(x, y)``; the loss (and metrics) on it.

        Returns:
            As ``evaluate``: the loss, ``[loss, *metrics]``, or a dict with ``return_dict``.
        """
        kept = self.history
        try:
            history = self.fit(x, y, batch_size=_rows(x), epochs=1, verbose=0, shuffle=False,
                               sample_weight=sample_weight, class_weight=class_weight)
        finally:
            self.history = kept
        return keras_result({k: v[-1] for k, v in history.history.items()}, return_dict)

    def test_on_batch(self: _Loops, x: Any, y: Any = None, sample_weight: Any = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) on the batch ``(x, y)``, without training."""
        return self.evaluate(x, y, batch_size=_rows(x), verbose=0, sample_weight=sample_weight,
                             return_dict=return_dict)

    def predict_on_batch(self: _Loops, x: Any) -> Any:
        """The outputs for the batch ``x`` (numpy), as ``predict`` gives them."""
        return self.predict(x, batch_size=_rows(x), verbose=0)

    def count_params(self: _Loops) -> int:
        """The module's parameters, trainable and frozen (each shared tensor once), as
        ``summary()`` totals them."""
        counts = count_params(self.module)
        return counts["trainable"] + counts["frozen"]


def _rows(x: Any) -> int:
    if x is None:
        raise ValueError("x is None; pass the batch's inputs (arrays or tensors).")
    return max(1, leading_length(to_tensor(x)))


def keras_result(logs: dict[str, float],
                 return_dict: bool) -> float | list[float] | dict[str, float]:
    """What Keras's evaluate-like methods return: ``logs`` with ``return_dict``, else the
    loss alone or ``[loss, *metrics]``."""
    if return_dict:
        return logs
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
