"""Strategies: how modules and tensors are placed and replicas talk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirrorfit.strategies.default import get_strategy
from mirrorfit.strategies.mirrored import MirroredStrategy, MultiWorkerMirroredStrategy
from mirrorfit.strategies.one_device import OneDeviceStrategy
from mirrorfit.strategies.strategy import Strategy

if TYPE_CHECKING:
    from mirrorfit.strategies.pipeline import PipelineStrategy
    from mirrorfit.strategies.sharded import ShardedStrategy

#: imported on first use: FSDP2 and torch.distributed.pipelining pull in DTensor and
#: dynamo (about 1.1 s), which every worker would otherwise pay at ``import mirrorfit``
LAZY_STRATEGIES = {"PipelineStrategy": "mirrorfit.strategies.pipeline",
         "ShardedStrategy": "mirrorfit.strategies.sharded"}


def __getattr__(name: str) -> Any:
    if name in LAZY_STRATEGIES:
        import importlib

        return getattr(importlib.import_module(LAZY_STRATEGIES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "MirroredStrategy",
    "MultiWorkerMirroredStrategy",
    "OneDeviceStrategy",
    "PipelineStrategy",
    "ShardedStrategy",
    "Strategy",
    "get_strategy",
]
