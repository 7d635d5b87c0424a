"""The strategy in scope (``with strategy.scope():``), thread-local like Keras's.

Only the stack lives here (it imports no strategy, so ``Strategy.scope`` can use
it); :func:`mirrorfit.strategies.default.get_strategy` adds the default.
"""

from __future__ import annotations

import threading
from typing import Any

_state = threading.local()


def _stack() -> list[Any]:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def push(strategy: Any) -> None:
    _stack().append(strategy)


def pop() -> None:
    _stack().pop()


def current() -> Any:
    """The innermost strategy in scope, or None."""
    stack = _stack()
    return stack[-1] if stack else None


def has_strategy() -> bool:
    return bool(_stack())
