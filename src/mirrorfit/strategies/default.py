"""``mirrorfit.get_strategy()``: the strategy in scope, else the default one."""

from __future__ import annotations

import functools

from mirrorfit.strategies import context
from mirrorfit.strategies.one_device import OneDeviceStrategy
from mirrorfit.strategies.strategy import Strategy


@functools.cache
def default_strategy() -> OneDeviceStrategy:
    """One device: the first GPU, else the CPU (made once per process)."""
    return OneDeviceStrategy()


def get_strategy() -> Strategy:
    """The strategy in scope, else the default (one device: the first GPU, else the CPU)."""
    strategy = context.current()
    return strategy if strategy is not None else default_strategy()
