"""Saving and loading models: ``Model.save``, ``load_model``, ``restore_or_create``.

A saved model is a torch file (see :mod:`mirrorfit.checkpoint.io`) holding the
module's ``state_dict``, the optimizer's state and the compile configuration
when it is made of Keras names. It holds **no code**: loading runs
``torch.load(weights_only=True)``, which refuses pickled classes, so the
architecture comes from you -- pass ``module=`` to :func:`load_model`, or a
``build_fn`` to :func:`restore_or_create`. (Pickling the module would make
every load able to run arbitrary code; mirrorfit does not weaken that.)

Only the chief writes; with replicated state ``save`` is not collective, so calling
it on the chief alone, or on every worker, both work and neither can hang. The
files' content is built in :mod:`mirrorfit.checkpoint.model_file`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from mirrorfit import serialization
from mirrorfit.checkpoint import model_file
from mirrorfit.checkpoint.sharded import is_sharded
from mirrorfit.model import Model

__all__ = ["latest_checkpoint", "load_model", "restore_or_create"]


def load_model(filepath: str | os.PathLike[str], module: nn.Module | None = None, *,
               compile: bool = True, custom_objects: dict[str, Any] | None = None) -> Model:
    """A :class:`mirrorfit.Model` around ``module`` with the weights saved in ``filepath``.

    Args:
        filepath: a file written by ``Model.save``, ``save_weights`` or ModelCheckpoint
            (or the checkpoint folder ModelCheckpoint writes under ShardedStrategy).
        module: a fresh instance of the saved architecture (files hold no code).
        compile: compile with the saved configuration (Keras names, mirrorfit's losses,
            metrics and optimizers) and restore the optimizer state; otherwise the
            model comes back uncompiled (``predict`` works either way).
        custom_objects: your own losses, metrics or optimizer factories by the name the
            error message gives (their ``__name__``), as in Keras.

    Returns:
        The model, built in the strategy in scope.

    Raises:
        TypeError: ``module`` is missing.
        ValueError: the model was compiled with your own callables and
            ``custom_objects`` lacks some (the message names them).
        CheckpointError: a corrupt, unsafe, incompatible or mismatched file.

    Example:
        >>> model = mirrorfit.load_model("ckpt.pt", module=build_module())  # doctest: +SKIP
    """
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"load_model needs module=<a fresh instance of the saved architecture>; received "
            f"{type(module).__name__}. mirrorfit files hold weights, not code (they load with "
            "torch.load(weights_only=True)); or use mirrorfit.restore_or_create(dir, build_fn)."
        )
    model = Model(module)
    data = model_file.read(filepath, model.strategy)  # a file, or a sharded folder
    config = data.get("compile")
    if compile and config is not None:
        model.compile(**serialization.compile_arguments(config, custom_objects,
                                                        repr(str(filepath))))
    elif compile and data.get("optimizer") is not None:
        warnings.warn(f"{str(filepath)!r} was compiled with objects rather than Keras names; the "
                      "model comes back uncompiled and without optimizer state. Use "
                      "restore_or_create(dir, build_fn) to keep it.", stacklevel=2)
    context = model.training_context if model.compiled else None
    model_file.apply(model.strategy, model.module, context, data, repr(str(filepath)))
    return model


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The most recently written checkpoint file in ``directory`` (None if none).

    Hidden files (a writer's temporaries) are skipped.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir()  # files, and sharded checkpoints' folders
             if (p.is_file() or is_sharded(p)) and not p.name.startswith(".")]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def restore_or_create(directory: str | os.PathLike[str], build_fn: Callable[[], Model]) -> Model:
    """``build_fn()``, restored from the newest checkpoint in ``directory`` if there is one.

    Keras's fault-tolerance guide in one call (its ``make_or_restore_model()``):
    ``build_fn`` builds and compiles the model (the architecture and the compile
    arguments, whatever they are), then the latest file a ModelCheckpoint wrote
    into ``directory`` restores its weights and optimizer state.

    Args:
        directory: where ModelCheckpoint writes (may not exist yet).
        build_fn: returns a compiled :class:`mirrorfit.Model`.

    Returns:
        The model.

    Raises:
        TypeError: ``build_fn`` returned something else.
        CheckpointError: the newest file is corrupt, unsafe or from another model.
    """
    model = build_fn()
    if not isinstance(model, Model):
        raise TypeError(f"build_fn must return a mirrorfit.Model; it returned "
                        f"{type(model).__name__}.")
    path = latest_checkpoint(directory)
    if model.strategy.is_chief:  # as the Keras guide's make_or_restore_model()
        print(f"Restoring from {path}" if path is not None else "Creating a new model",
              flush=True)
    if path is not None:
        model.load_weights(path)
    return model
