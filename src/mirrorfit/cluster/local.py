"""A single process that nobody launched: rank 0 of a world of 1."""

from __future__ import annotations

from collections.abc import Mapping

from mirrorfit.cluster.environment import ClusterEnvironment


class LocalEnvironment(ClusterEnvironment):
    """The fallback: ``python train.py`` before any worker is started."""

    name = "local"

    @staticmethod
    def detect(environ: Mapping[str, str] | None = None) -> bool:
        return True

    @property
    def world_size(self) -> int:
        return 1

    @property
    def rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def main_address(self) -> str:
        return "127.0.0.1"

    @property
    def main_port(self) -> int:
        return 0
