"""Saving and loading models: ``Model.save``, ``load_model``, ``restore_or_create``.

A saved model is a torch file (see :mod:`mirrorfit.checkpoint.io`) holding the
module's ``state_dict``, the optimizer's state and the compile configuration
when it is made of Keras names. It holds **no code**: loading runs
``torch.load(weights_only=True)``, which refuses pickled classes, so the
architecture comes from you -- pass ``module=`` to :func:`load_model`, or a
``build_fn`` to :func:`restore_or_create`. (Pickling the module would make
every load able to run arbitrary code; mirrorfit does not weaken that.)

Only the chief writes; ``save`` is not collective, so calling it on the chief
alone, or on every worker, both work and neither can hang.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mirrorfit.checkpoint.io import load_checkpoint, save_checkpoint
from mirrorfit.checkpoint.state import check_module_state, check_optimizer_state

if TYPE_CHECKING:
    from mirrorfit.model import Model

__all__ = ["latest_checkpoint", "load_model", "restore_or_create"]


def compile_config(model: Model) -> dict[str, Any] | None:
    """The compile arguments if all are Keras names (reloadable), else None."""
    args = model._compile_args
    if args is None:
        return None
    names = [args["optimizer"], args["loss"], *args["metrics"]]
    if not all(isinstance(n, str) for n in names):
        return None
    return {"optimizer": args["optimizer"], "loss": args["loss"],
            "metrics": list(args["metrics"]), "steps_per_update": args["steps_per_update"]}


def model_content(model: Model, include_optimizer: bool = True) -> dict[str, Any]:
    """What a 'model' checkpoint holds (live tensors: write or snapshot them at once)."""
    trainer = model._trainer
    optimizer = trainer.steps.optimizer.state_dict() if trainer and include_optimizer else None
    return {"module": model.module.state_dict(), "optimizer": optimizer,
            "compile": compile_config(model)}


def weights_content(model: Model) -> dict[str, Any]:
    """What a 'weights' checkpoint holds: the module's state_dict."""
    return {"module": model.module.state_dict()}


def save_model(model: Model, filepath: str | os.PathLike[str],
               include_optimizer: bool = True) -> None:
    """Write ``model`` to ``filepath`` atomically, from the chief only (not collective)."""
    if model.strategy.is_chief:
        save_checkpoint(model_content(model, include_optimizer), filepath, "model")


def save_weights(model: Model, filepath: str | os.PathLike[str]) -> None:
    """Write the module's weights to ``filepath`` atomically, from the chief only."""
    if model.strategy.is_chief:
        save_checkpoint(weights_content(model), filepath, "weights")


def load_weights(model: Model, filepath: str | os.PathLike[str]) -> None:
    """Load weights (and the optimizer state, if saved and ``model`` is compiled).

    Raises:
        CheckpointError: a corrupt, unsafe, incompatible or mismatched file.
    """
    data = load_checkpoint(filepath, ("model", "weights"), map_location=model.strategy.device)
    _apply(model, data, repr(str(filepath)))


def _apply(model: Model, data: dict[str, Any], source: str) -> None:
    """Check, then load the module and, where both exist, the optimizer state."""
    check_module_state(model.module, data["module"], source)
    opt_state = data.get("optimizer")
    trainer = model._trainer
    if trainer is not None and opt_state is not None:
        check_optimizer_state(trainer.steps.optimizer, opt_state, source)
    model.module.load_state_dict(data["module"])
    if trainer is not None and opt_state is not None:
        trainer.steps.optimizer.load_state_dict(opt_state)


def load_model(filepath: str | os.PathLike[str], module: nn.Module | None = None, *,
               compile: bool = True) -> Model:
    """A :class:`mirrorfit.Model` around ``module`` with the weights saved in ``filepath``.

    Args:
        filepath: a file written by ``Model.save``, ``save_weights`` or ModelCheckpoint.
        module: a fresh instance of the saved architecture (files hold no code).
        compile: compile with the saved configuration when it is made of Keras names,
            and restore the optimizer state; otherwise the model comes back uncompiled.

    Returns:
        The model, built in the strategy in scope.

    Raises:
        TypeError: ``module`` is missing.
        CheckpointError: a corrupt, unsafe, incompatible or mismatched file.

    Example:
        >>> model = mirrorfit.load_model("ckpt.pt", module=build_module())  # doctest: +SKIP
    """
    from mirrorfit.model import Model

    if not isinstance(module, nn.Module):
        raise TypeError(
            f"load_model needs module=<a fresh instance of the saved architecture>; received "
            f"{type(module).__name__}. mirrorfit files hold weights, not code (they load with "
            "torch.load(weights_only=True)); or use mirrorfit.restore_or_create(dir, build_fn)."
        )
    model = Model(module)
    data = load_checkpoint(filepath, ("model", "weights"), map_location=model.strategy.device)
    config = data.get("compile")
    if compile and config is not None:
        model.compile(config["optimizer"], config["loss"], config["metrics"],
                      steps_per_update=config["steps_per_update"])
    elif compile and data.get("optimizer") is not None:
        warnings.warn(f"{str(filepath)!r} was compiled with objects rather than Keras names; the "
                      "model comes back uncompiled and without optimizer state. Use "
                      "restore_or_create(dir, build_fn) to keep it.", stacklevel=2)
    _apply(model, data, repr(str(filepath)))
    return model


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The most recently written checkpoint file in ``directory`` (None if none).

    Hidden files (a writer's temporaries) are skipped.
    """
    folder = Path(directory)
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
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
    from mirrorfit.model import Model

    model = build_fn()
    if not isinstance(model, Model):
        raise TypeError(f"build_fn must return a mirrorfit.Model; it returned "
                        f"{type(model).__name__}.")
    path = latest_checkpoint(directory)
    if path is not None:
        load_weights(model, path)
    return model
