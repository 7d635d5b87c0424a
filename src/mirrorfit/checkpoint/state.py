"""The full training state of a :class:`mirrorfit.Model`, gathered and restored.

What a backup holds, and why each piece is needed for an exact resume:

- ``model``: ``Model.state_dict()`` -- module weights, optimizer state, and the
  trainer's position (epoch, step), data seed and stream state;
- the trainer's running metric state, stored as its **global** sum over
  replicas: on restore the chief takes the sum and the others zeros, so the
  epoch's logs come out the same on any replica count;
- ``callbacks``: every callback's ``state_dict`` (History included), keyed by
  class name (``History``, ``ModelCheckpoint``, ``ModelCheckpoint#1``...);
- ``rng``: every rank's global RNG states (rank ``r`` restores its own; on a
  different replica count, ranks beyond the saved ones take rank 0's).

DDP keeps weights and optimizer state replicated, so the chief's copy is the
whole state and one file written by one process is enough (no
``torch.distributed.checkpoint`` needed for data parallelism).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mirrorfit.callbacks.callback import Callback
from mirrorfit.checkpoint import rng
from mirrorfit.checkpoint.errors import MismatchedCheckpointError

if TYPE_CHECKING:
    from mirrorfit.model import Model

_SHOWN = 5  # names listed in a mismatch message


def capture_training_state(model: Model, callbacks: Iterable[Callback]) -> dict[str, Any] | None:
    """Everything needed to resume ``model``'s ``fit`` at the current step.

    Collective: call it on every replica at the same point. Returns the state on
    the chief and None elsewhere (the chief writes it).
    """
    strategy = model.strategy
    trainer = model._compiled()
    tracker = _global_tracker_state(model)
    rngs = strategy.all_gather_object(rng.capture())
    if not strategy.is_chief:
        return None
    state = model.state_dict()
    state["trainer"]["tracker"] = tracker
    return {"model": state, "callbacks": callback_states(callbacks), "rng": rngs,
            "position": {"epoch": trainer.epoch, "step": trainer.step},
            "replicas": strategy.num_replicas_in_sync}


def restore_training_state(model: Model, state: Mapping[str, Any],
                           callbacks: Iterable[Callback], source: str) -> None:
    """Put ``model``, its trainer, ``callbacks`` and the RNGs back where ``state`` was.

    Raises:
        MismatchedCheckpointError: ``state`` belongs to another model (nothing is
            changed then).
    """
    strategy = model.strategy
    saved = dict(state["model"])
    trainer_state = dict(saved["trainer"])
    if not strategy.is_chief:  # the chief carries the global sums, the others add zeros
        trainer_state["tracker"] = {k: torch.zeros_like(v)
                                    for k, v in trainer_state["tracker"].items()}
    saved["trainer"] = trainer_state
    load_model_state(model, saved, source)
    load_callback_states(callbacks, state.get("callbacks", {}))
    rngs = state["rng"]
    rng.restore(rngs[strategy.rank] if strategy.rank < len(rngs) else rngs[0])


def load_model_state(model: Model, state: Mapping[str, Any], source: str) -> None:
    """Load ``Model.state_dict()`` output: checks everything first, then loads.

    Raises:
        MismatchedCheckpointError: keys, shapes or optimizer groups that differ.
    """
    check_module_state(model.module, state["module"], source)
    trainer = model._trainer
    if trainer is not None and state.get("optimizer") is not None:
        check_optimizer_state(trainer.steps.optimizer, state["optimizer"], source)
    if trainer is not None and state.get("trainer") is not None:
        trainer.load_state_dict(dict(state["trainer"]))  # raises on another batch size
    model.module.load_state_dict(state["module"])
    if trainer is not None and state.get("optimizer") is not None:
        trainer.steps.optimizer.load_state_dict(state["optimizer"])


def check_module_state(module: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Raise a MismatchedCheckpointError unless ``state`` fits ``module`` exactly."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {_shape(v)}, model {_shape(own[k])}"
              for k, v in state.items() if k in own and _shape(v) != _shape(own[k])]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_names(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_names(unexpected)}")
    if shapes:
        problems.append(f"different shapes: {_names(shapes)}")
    if problems:
        raise MismatchedCheckpointError(
            f"{source} was saved from another model ({'; '.join(problems)}). Build the same "
            f"architecture as when it was saved ({type(module).__name__} here), or point to "
            "this model's checkpoint."
        )


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping[str, Any],
                          source: str) -> None:
    """Raise a MismatchedCheckpointError unless ``state`` has ``optimizer``'s groups."""
    own = [len(g["params"]) for g in optimizer.param_groups]
    saved = [len(g.get("params", ())) for g in state.get("param_groups", ())]
    if own != saved:
        raise MismatchedCheckpointError(
            f"{source} holds optimizer state for parameter groups of sizes {saved}; this "
            f"model's {type(optimizer).__name__} has {own}. Compile the model as when it was "
            "saved, or load the weights only."
        )


def callback_states(callbacks: Iterable[Callback]) -> dict[str, Any]:
    """Every callback's ``state_dict``, keyed by class name (``Name#i`` for repeats)."""
    return {key: cb.state_dict() for key, cb in _keyed(callbacks)}


def load_callback_states(callbacks: Iterable[Callback], states: Mapping[str, Any]) -> None:
    """Give each callback the state saved under its key (others are left alone)."""
    for key, cb in _keyed(callbacks):
        if key in states:
            cb.load_state_dict(states[key])


def _keyed(callbacks: Iterable[Callback]) -> list[tuple[str, Callback]]:
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append((name if count == 0 else f"{name}#{count}", cb))
    return out


def _global_tracker_state(model: Model) -> dict[str, torch.Tensor]:
    """The training metrics' state summed over replicas (zeros at an epoch boundary,
    where the next epoch starts from a reset tracker)."""
    trainer = model._compiled()
    local = trainer.train_tracker.state_dict()
    if trainer.step == 0:
        return {k: torch.zeros_like(v) for k, v in local.items()}
    flat = torch.cat([v.reshape(-1).to(torch.float64) for v in local.values()])
    total = model.strategy.reduce(flat, "sum")
    assert isinstance(total, torch.Tensor)
    parts = torch.split(total.cpu(), [v.numel() for v in local.values()])
    return {k: p.reshape(v.shape).to(v.dtype).clone()
            for (k, v), p in zip(local.items(), parts, strict=True)}


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, "shape") else None


def _names(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
