"""Cluster environments (where am I) and the local launcher (how workers start)."""

from __future__ import annotations

from collections.abc import Mapping

from mirrorfit.cluster.environment import ClusterEnvironment, EnvironmentError_
from mirrorfit.cluster.local import LocalEnvironment
from mirrorfit.cluster.torchelastic import TorchElasticEnvironment

__all__ = [
    "ClusterEnvironment",
    "EnvironmentError_",
    "LocalEnvironment",
    "TorchElasticEnvironment",
    "detect_environment",
]


def _candidates() -> list[type[ClusterEnvironment]]:
    envs: list[type[ClusterEnvironment]] = [TorchElasticEnvironment]
    try:  # SLURM support lives in its own module
        from mirrorfit.cluster.slurm import SlurmEnvironment

        envs.append(SlurmEnvironment)
    except ImportError:  # pragma: no cover - module always shipped
        pass
    return envs


def detect_environment(environ: Mapping[str, str] | None = None) -> ClusterEnvironment:
    """The first environment whose variables are present; torch elastic wins over
    SLURM (torchrun inside an allocation), local when none is."""
    for env_type in _candidates():
        if env_type.detect(environ):
            env = env_type(environ)
            env.validate()
            return env
    return LocalEnvironment(environ)
