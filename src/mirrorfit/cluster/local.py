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

    world_size = property(lambda self: 1)  # type: ignore[assignment]
    rank = property(lambda self: 0)  # type: ignore[assignment]
    local_rank = property(lambda self: 0)  # type: ignore[assignment]
    node_rank = property(lambda self: 0)  # type: ignore[assignment]
    main_address = property(lambda self: "127.0.0.1")  # type: ignore[assignment]
    main_port = property(lambda self: 0)  # type: ignore[assignment]
