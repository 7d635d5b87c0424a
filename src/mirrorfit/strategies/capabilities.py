"""Optional capabilities of a strategy, as small explicit interfaces.

The step function (``strategies.step_function``) and the checkpoint code ask
``isinstance(strategy, Capability)``; a strategy that lacks one simply does not
inherit it (no ``getattr`` probing of wrapped modules, which would silently do
nothing on a module that lacks the method: an FSDP module, for one, would
all-reduce on every micro-step).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mirrorfit.strategies.setup import Setup


class BackwardSyncControl(ABC):
    """The strategy can skip its gradient synchronization for a backward pass
    (gradient accumulation: one all-reduce / reduce-scatter per optimizer step)."""

    @abstractmethod
    def no_backward_sync(self, setup: Setup, enabled: bool) -> AbstractContextManager[Any]:
        """Inside, when ``enabled``, backward passes accumulate locally."""


class ShardedState(ABC):
    """Parameters and optimizer state live in shards across ranks: checkpoints are
    written by every rank through ``torch.distributed.checkpoint`` into a folder."""

    @abstractmethod
    def save_sharded(self, state: dict[str, Any], path: str | os.PathLike[str],
                     kind: str = "backup") -> None:
        """Collective: write ``state`` (shards included) to the folder ``path`` atomically,
        as a checkpoint of ``kind`` ('backup', 'model')."""

    @abstractmethod
    def load_sharded(self, template: dict[str, Any], path: str | os.PathLike[str],
                     kinds: Collection[str] = ("backup",)) -> dict[str, Any]:
        """Collective: ``template`` filled from the folder ``path`` (resharded as needed),
        which must hold a checkpoint of one of ``kinds``."""
