"""mirrorfit: Keras-simple distributed training for PyTorch.

Example:
    >>> import mirrorfit
    >>> strategy = mirrorfit.MirroredStrategy(devices=2)   # doctest: +SKIP
    >>> with strategy.scope():                              # doctest: +SKIP
    ...     model = mirrorfit.Model(module)
    ...     model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    >>> model.fit(x, y, batch_size=64, epochs=2)            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mirrorfit import (
    callbacks,
    data,
    datasets,
    losses,
    metrics,
    mixed_precision,
    optimizers,
    scaling,
    strategies,
)
from mirrorfit._version import __version__
from mirrorfit.devices import list_devices
from mirrorfit.model import Model
from mirrorfit.saving import load_model, restore_or_create
from mirrorfit.seed import set_seed
from mirrorfit.shims import multi_gpu_model
from mirrorfit.strategies import (
    MirroredStrategy,
    MultiWorkerMirroredStrategy,
    OneDeviceStrategy,
    Strategy,
    get_strategy,
)

if TYPE_CHECKING:
    from mirrorfit.strategies import PipelineStrategy, ShardedStrategy


def __getattr__(name: str) -> Any:
    """``ShardedStrategy`` and ``PipelineStrategy`` load on first use (see strategies)."""
    if name in strategies.LAZY_STRATEGIES:
        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "MirroredStrategy",
    "Model",
    "MultiWorkerMirroredStrategy",
    "OneDeviceStrategy",
    "PipelineStrategy",
    "ShardedStrategy",
    "Strategy",
    "__version__",
    "callbacks",
    "data",
    "datasets",
    "get_strategy",
    "list_devices",
    "load_model",
    "losses",
    "metrics",
    "mixed_precision",
    "multi_gpu_model",
    "optimizers",
    "restore_or_create",
    "scaling",
    "set_seed",
]
