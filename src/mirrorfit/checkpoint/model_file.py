"""Model and weights files: what ``Model.save``, ``save_weights``, ``load_weights``
and ``ModelCheckpoint`` write and read.

A 'model' file holds the module's ``state_dict``, the optimizer's state, the
precision policy's state (the float16 loss scale) and the compile configuration
(:mod:`mirrorfit.serialization`); a 'weights' file the
module's ``state_dict``. Both are one consolidated file (whole tensors, gathered
by the strategy where it shards), written atomically by the chief, so
:func:`mirrorfit.load_model` reads them on one device.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from torch import nn

from mirrorfit import serialization
from mirrorfit.checkpoint import sharded as sharded_io
from mirrorfit.checkpoint.io import load_checkpoint, save_checkpoint
from mirrorfit.checkpoint.state import check_module_state, check_optimizer_state
from mirrorfit.keras_models import matching_state  # Keras's automatic layer names

if TYPE_CHECKING:
    from mirrorfit.strategies.strategy import Strategy
    from mirrorfit.trainer.context import TrainingContext

__all__ = ["apply", "compile_config", "load_weights", "model_content", "read", "save_model",
           "save_weights", "sharded_model_content", "weights_content"]


def compile_config(context: TrainingContext | None) -> dict[str, Any] | None:
    """compile's arguments as the file records them (None if never compiled): names as
    they are, mirrorfit's objects by class and config, your own by name
    (:mod:`mirrorfit.serialization`)."""
    return serialization.compile_config(context.compile_args if context is not None else None)


def model_content(strategy: Strategy, module: nn.Module, context: TrainingContext | None,
                  include_optimizer: bool = True) -> dict[str, Any]:
    """What a 'model' checkpoint holds (live tensors: write or snapshot them at once).
    Collective where the strategy gathers shards."""
    optimizer = precision = None
    if context is not None and include_optimizer:
        optimizer = strategy.full_optimizer_state(context.setup)
        precision = context.setup.precision.state_dict()  # the float16 loss scale
    return {"module": strategy.full_state_dict(module), "optimizer": optimizer,
            "precision": precision, "compile": compile_config(context)}


def sharded_model_content(strategy: Strategy, context: TrainingContext) -> dict[str, Any]:
    """A 'model' checkpoint as a sharding strategy writes it: every rank's shards of the
    module and optimizer (live tensors) with the loss scale and compile configuration;
    nothing is gathered (``Strategy.save_checkpoint`` writes a folder)."""
    return {"module": strategy.module_state(context.setup),
            "optimizer": strategy.optimizer_state(context.setup),
            "precision": context.setup.precision.state_dict(),
            "compile": compile_config(context)}


def read(filepath: str | os.PathLike[str], strategy: Strategy) -> dict[str, Any]:
    """A 'model' or 'weights' checkpoint's content on ``strategy``'s device: a file, or a
    sharded checkpoint folder read whole by this process (not collective).

    Raises:
        CheckpointError, FileNotFoundError: as ``checkpoint.io.load_checkpoint``.
    """
    if sharded_io.is_sharded(filepath):
        return sharded_io.read_whole(filepath, ("model", "weights"), strategy.device)
    return load_checkpoint(filepath, ("model", "weights"), map_location=strategy.device)


def weights_content(strategy: Strategy, module: nn.Module) -> dict[str, Any]:
    """What a 'weights' checkpoint holds: the whole module's state_dict."""
    return {"module": strategy.full_state_dict(module)}


def save_model(strategy: Strategy, module: nn.Module, context: TrainingContext | None,
               filepath: str | os.PathLike[str], include_optimizer: bool = True) -> None:
    """Write a 'model' file atomically from the chief (not collective when replicated)."""
    content = model_content(strategy, module, context, include_optimizer)
    if strategy.is_chief:
        save_checkpoint(content, filepath, "model")


def save_weights(strategy: Strategy, module: nn.Module, filepath: str | os.PathLike[str]) -> None:
    """Write a 'weights' file atomically from the chief."""
    content = weights_content(strategy, module)
    if strategy.is_chief:
        save_checkpoint(content, filepath, "weights")


def load_weights(strategy: Strategy, module: nn.Module, context: TrainingContext | None,
                 filepath: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a 'model' or 'weights' file into ``module`` (and the optimizer, if saved and
    compiled); returns the file's content.

    Raises:
        CheckpointError: a corrupt, unsafe, incompatible or mismatched file.
    """
    data = read(filepath, strategy)
    apply(strategy, module, context, data, repr(str(filepath)))
    return data


def apply(strategy: Strategy, module: nn.Module, context: TrainingContext | None,
          data: dict[str, Any], source: str) -> None:
    """Check, then load the module and, where both exist, the optimizer state."""
    module_state = matching_state(module, data["module"])
    check_module_state(module, module_state, source)
    opt_state = data.get("optimizer") if context is not None else None
    if context is not None and opt_state is not None:
        check_optimizer_state(context.optimizer, opt_state, source)
    strategy.load_full_state_dict(module, module_state)
    if context is not None and opt_state is not None:
        strategy.load_full_optimizer_state(context.setup, opt_state)
        if data.get("precision"):
            context.setup.precision.load_state_dict(dict(data["precision"]))
