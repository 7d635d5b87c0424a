"""The strategies every contract test runs against, by name.

A new strategy joins the contract by adding a line to :data:`STRATEGIES` (and its
replica counts to :data:`REPLICAS`): the same checks then run against it in the
three tiers (pure logic, a one-rank group, real gloo workers).
"""

from __future__ import annotations

from collections.abc import Callable

import mirrorfit

STRATEGIES: dict[str, Callable[[int], mirrorfit.Strategy]] = {
    "one_device": lambda n: mirrorfit.OneDeviceStrategy("cpu"),
    "mirrored": lambda n: mirrorfit.MirroredStrategy(devices=n),
    "sharded": lambda n: mirrorfit.ShardedStrategy(devices=n),
    # n workers are n stages (one replica); 1: a one-stage pipeline, in this process
    "pipeline": lambda n: mirrorfit.PipelineStrategy(stages=n, microbatches=4),
}

#: worker counts the worker tier runs each strategy with (1 is the reference); replicas
#: for the data-parallel ones, stages of one replica for the pipeline (3 and 4 replicas
#: of MirroredStrategy: tests/invariance/test_replicas.py)
REPLICAS: dict[str, tuple[int, ...]] = {"one_device": (1,), "mirrored": (2,), "sharded": (2,),
                                        "pipeline": (2,)}


def make_strategy(kind: str, replicas: int) -> mirrorfit.Strategy:
    return STRATEGIES[kind](replicas)


def capabilities(kind: str) -> set[type]:
    """The capability interfaces strategy ``kind`` must declare (and no others)."""
    from mirrorfit.strategies.capabilities import BackwardSyncControl, ShardedState

    return {"one_device": set(), "mirrored": {BackwardSyncControl},
            "sharded": {BackwardSyncControl, ShardedState}, "pipeline": {ShardedState}}[kind]
