"""Strategies: how modules and tensors are placed and replicas talk."""

from __future__ import annotations

from mirrorfit.strategies.default import get_strategy
from mirrorfit.strategies.mirrored import MirroredStrategy, MultiWorkerMirroredStrategy
from mirrorfit.strategies.one_device import OneDeviceStrategy
from mirrorfit.strategies.pipeline import PipelineStrategy
from mirrorfit.strategies.sharded import ShardedStrategy
from mirrorfit.strategies.strategy import Strategy

__all__ = [
    "MirroredStrategy",
    "MultiWorkerMirroredStrategy",
    "OneDeviceStrategy",
    "PipelineStrategy",
    "ShardedStrategy",
    "Strategy",
    "get_strategy",
]
