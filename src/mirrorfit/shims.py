"""Migration shims: code written for Keras 1/2's ``multi_gpu_model`` runs unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from mirrorfit.model import Model

__all__ = ["multi_gpu_model"]


def multi_gpu_model(model: nn.Module | Model, gpus: int | Sequence[int | str] | None = None,
                    cpu_merge: bool = True, cpu_relocation: bool = False) -> Model:
    """Keras's ``multi_gpu_model``: this is ``MirroredStrategy(devices=gpus)`` plus ``Model``.

    Returns a :class:`mirrorfit.Model` bound to ``MirroredStrategy(devices=gpus)``:
    ``compile`` and ``fit`` then run data-parallel, and ``batch_size`` is the global
    batch split over the replicas, as with Keras. On a host without GPUs, ``gpus=2``
    means 2 CPU worker processes (the script is re-run in each, as with
    MirroredStrategy). ``cpu_merge`` and ``cpu_relocation`` are accepted and ignored
    (every replica holds the whole model; nothing is merged on the CPU).

    Args:
        model: a ``torch.nn.Module`` or an uncompiled :class:`mirrorfit.Model`.
        gpus: a count (>= 2 in Keras; 1 works too), a list such as ``[0, 2]``, or None
            for every GPU.

    Example:
        >>> parallel = mirrorfit.multi_gpu_model(module, gpus=2)   # doctest: +SKIP
        >>> parallel.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> parallel.fit(x, y, batch_size=256, epochs=2)            # 128 per replica
    """
    from mirrorfit.model import Model
    from mirrorfit.strategies.mirrored import MirroredStrategy

    module = model.module if isinstance(model, Model) else model
    if not isinstance(module, nn.Module):
        raise TypeError(f"multi_gpu_model takes a torch.nn.Module or a mirrorfit.Model; "
                        f"received {type(model).__name__}.")
    strategy = MirroredStrategy(devices=gpus)
    with strategy.scope():
        return Model(module)
