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

from mirrorfit import (
    callbacks,
    data,
    datasets,
    losses,
    metrics,
    mixed_precision,
    optimizers,
    scaling,
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
    PipelineStrategy,
    ShardedStrategy,
    Strategy,
    get_strategy,
)

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
