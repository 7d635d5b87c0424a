"""Calls every callback's hook in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs, TrainableModel

HOOKS = [
    "on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
    "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
    "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
    "on_predict_batch_begin", "on_predict_batch_end",
]


class CallbackList(Callback):
    """A callback that forwards every hook to a list of callbacks."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: TrainableModel,
                 params: dict[str, Any]) -> None:
        super().__init__()
        self.params = params
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be mirrorfit.callbacks.Callback instances; "
                                f"received {type(cb).__name__}.")
            cb.set_model(model)
            cb.set_params(params)
        self.batch_logs = any(cb.batch_logs for cb in self.callbacks)
        # bind only the hooks somebody overrides, so empty hooks cost nothing per step
        for hook in HOOKS:
            targets = [getattr(cb, hook) for cb in self.callbacks if _overrides(cb, hook)]
            setattr(self, hook, _fan_out(targets))

    def __iter__(self) -> Iterator[Callback]:
        return iter(self.callbacks)


def _overrides(cb: Callback, hook: str) -> bool:
    """True when ``cb`` defines ``hook`` itself: in its class, on the instance (Keras's
    LambdaCallback habit), or through the ``on_batch_*`` aliases of ``on_train_batch_*``."""
    fn = getattr(cb, hook)
    if getattr(fn, "__func__", fn) is not getattr(Callback, hook):
        return True
    alias = _ALIASES.get(hook)
    return alias is not None and _overrides(cb, alias)


_ALIASES = {"on_train_batch_begin": "on_batch_begin", "on_train_batch_end": "on_batch_end"}


def _fan_out(targets: list[Any]) -> Any:
    if not targets:
        return _noop
    if len(targets) == 1:  # the hook itself: one call per step, not two
        return targets[0]

    def call(*args: Any, **kwargs: Any) -> None:
        for fn in targets:
            fn(*args, **kwargs)

    return call


def _noop(*args: Any, logs: Logs | None = None) -> None:
    return None
