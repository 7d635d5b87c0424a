"""Where am I: the cluster environment a process runs in.

An environment only *reads* its surroundings (environment variables) and answers
who this process is. It never starts processes (that is the launcher's job) and
never places tensors (that is the strategy's job).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping


class EnvironmentError_(ValueError):
    """The environment variables describe an impossible world (e.g. rank >= world size)."""


class ClusterEnvironment(ABC):
    """Answers rank, local rank, world size, node rank, main address and port.

    Args:
        environ: the variables to read; ``os.environ`` when None. Tests pass a dict.
    """

    #: short name shown in logs ("local", "torchelastic", "slurm")
    name: str = "base"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ

    @staticmethod
    @abstractmethod
    def detect(environ: Mapping[str, str] | None = None) -> bool:
        """True when the variables say the process runs in this environment."""

    @property
    @abstractmethod
    def world_size(self) -> int: ...

    @property
    @abstractmethod
    def rank(self) -> int: ...

    @property
    @abstractmethod
    def local_rank(self) -> int: ...

    @property
    @abstractmethod
    def node_rank(self) -> int: ...

    @property
    @abstractmethod
    def main_address(self) -> str: ...

    @property
    @abstractmethod
    def main_port(self) -> int: ...

    @property
    def local_world_size(self) -> int:
        """Processes on this node; defaults to world size / nodes when not told."""
        return self.world_size

    @property
    def restart_count(self) -> int:
        """How many times the job was restarted (0 on the first attempt)."""
        return 0

    def validate(self) -> None:
        """Raise a clear error when the values cannot describe a real job."""
        ws, rank, local = self.world_size, self.rank, self.local_rank
        if ws < 1:
            raise EnvironmentError_(f"{self.name}: world size must be >= 1, received {ws}.")
        if not 0 <= rank < ws:
            raise EnvironmentError_(
                f"{self.name}: rank must satisfy 0 <= rank < world size; received rank={rank}, "
                f"world size={ws}. Check the launcher's variables."
            )
        if local < 0:
            raise EnvironmentError_(f"{self.name}: local rank must be >= 0, received {local}.")

    def _int(self, key: str, default: int | None = None) -> int:
        value = self.environ.get(key)
        if value is None or value == "":
            if default is None:
                raise EnvironmentError_(f"{self.name}: environment variable {key} is not set.")
            return default
        try:
            return int(value)
        except ValueError:
            raise EnvironmentError_(
                f"{self.name}: environment variable {key} must be an integer, received {value!r}."
            ) from None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size}, "
            f"local_rank={self.local_rank}, node_rank={self.node_rank})"
        )
