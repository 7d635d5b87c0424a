"""A single process that nobody launched: rank 0 of a world of 1."""

from __future__ import annotations

import sys
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


def interactive_session() -> bool:
    """True in a REPL, notebook or ``python -c``: no script file a worker could re-run."""
    main = sys.modules.get("__main__")
    if main is None or not getattr(main, "__file__", None) or hasattr(sys, "ps1"):
        return True
    ipython = sys.modules.get("IPython")  # a kernel, not a script that imports IPython
    get = getattr(ipython, "get_ipython", None)
    return get is not None and get() is not None
