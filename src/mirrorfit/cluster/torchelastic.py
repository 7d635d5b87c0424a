"""Workers started by torchrun / torch elastic (also by ``mirrorfit run`` and by
MirroredStrategy's own launcher, which use torch elastic underneath)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from mirrorfit.cluster.environment import ClusterEnvironment

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class TorchElasticEnvironment(ClusterEnvironment):
    """Reads RANK, WORLD_SIZE, LOCAL_RANK, GROUP_RANK, MASTER_ADDR/PORT."""

    name = "torchelastic"

    @staticmethod
    def detect(environ: Mapping[str, str] | None = None) -> bool:
        env = os.environ if environ is None else environ
        return all(k in env for k in _REQUIRED)

    @property
    def world_size(self) -> int:
        return self._int("WORLD_SIZE")

    @property
    def rank(self) -> int:
        return self._int("RANK")

    @property
    def local_rank(self) -> int:
        return self._int("LOCAL_RANK")

    @property
    def local_world_size(self) -> int:
        return self._int("LOCAL_WORLD_SIZE", self.world_size)

    @property
    def node_rank(self) -> int:
        return self._int("GROUP_RANK", 0)

    @property
    def main_address(self) -> str:
        return self.environ["MASTER_ADDR"]

    @property
    def main_port(self) -> int:
        return self._int("MASTER_PORT")

    @property
    def restart_count(self) -> int:
        return self._int("TORCHELASTIC_RESTART_COUNT", 0)
