"""The strategy in scope (``with strategy.scope():``), thread-local like Keras's."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mirrorfit.strategies.strategy import Strategy

_state = threading.local()


def _stack() -> list[Strategy]:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def push(strategy: Strategy) -> None:
    _stack().append(strategy)


def pop() -> None:
    _stack().pop()


def get_strategy() -> Strategy:
    """The strategy in scope, else the default (one device: the first GPU, else the CPU)."""
    stack = _stack()
    if stack:
        return stack[-1]
    from mirrorfit.strategies.one_device import default_strategy

    return default_strategy()


def has_strategy() -> bool:
    return bool(_stack())
