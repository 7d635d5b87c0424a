"""LambdaCallback: Keras's callback built from plain functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.callback_list import HOOKS

# hooks that take only logs (the others take an epoch or batch index first)
_UNINDEXED = ("train_begin", "train_end", "test_begin", "test_end", "predict_begin",
              "predict_end")


class LambdaCallback(Callback):
    """A callback whose hooks are the functions you pass (Keras's signatures).

    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``,
    ``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch, logs)``;
    any other hook name of :class:`Callback` may be passed as a keyword too.

    The functions run on **every** worker: print or write files under
    ``if strategy.is_chief:``. Logs are global values; a batch-level function
    receives the running logs (which costs one small all-reduce per step).

    Raises:
        TypeError: a keyword that is not a hook name, or a value that is not callable.

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> seen = []
        >>> cb = mirrorfit.callbacks.LambdaCallback(
        ...     on_epoch_end=lambda epoch, logs: seen.append(epoch))
        >>> _ = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=2,
        ...               verbose=0, callbacks=[cb])
        >>> seen
        [0, 1]
    """

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None,
                 on_train_end: Callable[..., Any] | None = None,
                 on_train_batch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None,
                 **kwargs: Callable[..., Any]) -> None:
        super().__init__()
        hooks = {"on_epoch_begin": on_epoch_begin, "on_epoch_end": on_epoch_end,
                 "on_train_begin": on_train_begin, "on_train_end": on_train_end,
                 "on_train_batch_begin": on_train_batch_begin,
                 "on_train_batch_end": on_train_batch_end, **kwargs}
        allowed = {*HOOKS, "on_batch_begin", "on_batch_end"}
        for name, fn in hooks.items():
            if name not in allowed:
                raise TypeError(f"LambdaCallback: {name!r} is not a callback hook; hooks are "
                                f"{sorted(allowed)}.")
            if fn is None:
                continue
            if not callable(fn):
                raise TypeError(f"LambdaCallback: {name} must be callable; received "
                                f"{type(fn).__name__}.")
            # CallbackList sees instance attributes as overrides
            setattr(self, name, _with_logs(fn, indexed=not name.endswith(_UNINDEXED)))
        # a batch-end function reads the running logs: ask fit for them
        self.batch_logs = any(hooks.get(h) is not None for h in ("on_train_batch_end",
                                                                 "on_batch_end"))


def _with_logs(fn: Callable[..., Any], indexed: bool) -> Callable[..., Any]:
    """Keras calls every hook with logs (``{}`` when there are none): so does this."""
    if indexed:
        def hook(index: int, logs: Logs | None = None) -> Any:
            return fn(index, logs if logs is not None else {})
    else:
        def hook(logs: Logs | None = None) -> Any:  # type: ignore[misc]
            return fn(logs if logs is not None else {})
    return hook
