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

The strategy lays the module and optimizer parts out: replicated (DDP) state is
whole on the chief, which writes one file; a strategy with ``ShardedState`` gives
every rank its shards, and every rank writes its part through
``torch.distributed.checkpoint`` (``Strategy.save_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from mirrorfit.checkpoint import rng
from mirrorfit.checkpoint.errors import MismatchedCheckpointError
from mirrorfit.keras_models import matching_state  # Keras's automatic layer names

if TYPE_CHECKING:
    from mirrorfit.trainer.context import TrainingContext


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

_SHOWN = 5  # names listed in a mismatch message


def capture_training_state(context: TrainingContext,
                           callbacks: Iterable[Stateful]) -> dict[str, Any] | None:
    """Everything needed to resume ``fit`` at the current step.

    Collective: call it on every replica at the same point. Returns the state on
    the ranks that write a part of the checkpoint (``strategy.writes_checkpoint``:
    the chief when the state is replicated, every rank when it is sharded) and None
    elsewhere.
    """
    strategy = context.strategy
    tracker = _global_tracker_state(context)
    rngs = strategy.all_gather_object(rng.capture())
    if not strategy.writes_checkpoint:
        return None
    state = context.state_dict()
    state["trainer"]["tracker"] = tracker
    return {"model": state, "callbacks": callback_states(callbacks), "rng": rngs,
            "position": {"epoch": context.epoch, "step": context.step},
            "replicas": strategy.num_replicas_in_sync}


def restore_training_state(context: TrainingContext, state: Mapping[str, Any],
                           callbacks: Iterable[Stateful], source: str) -> None:
    """Put the model, its trainer, ``callbacks`` and the RNGs back where ``state`` was.

    Raises:
        MismatchedCheckpointError: ``state`` belongs to another model (nothing is
            changed then).
    """
    strategy = context.strategy
    saved = dict(state["model"])
    trainer_state = dict(saved["trainer"])
    if not strategy.is_chief:  # the chief carries the global sums, the others add zeros
        trainer_state["tracker"] = {k: torch.zeros_like(v)
                                    for k, v in trainer_state["tracker"].items()}
    saved["trainer"] = trainer_state
    load_model_state(context.module, context, saved, source)
    load_callback_states(callbacks, state.get("callbacks", {}))
    rngs = state["rng"]
    rng.restore(rngs[strategy.rank] if strategy.rank < len(rngs) else rngs[0])


def load_model_state(module: nn.Module, context: TrainingContext | None,
                     state: Mapping[str, Any], source: str) -> None:
    """Load ``Model.state_dict()`` output: checks everything first, then loads.

    Raises:
        MismatchedCheckpointError: keys, shapes or optimizer groups that differ.
    """
    module_state = matching_state(module, state["module"])
    check_module_state(module, module_state, source)
    if context is None:
        module.load_state_dict(module_state)
        return
    strategy, setup = context.strategy, context.setup
    if state.get("optimizer") is not None:
        check_optimizer_state(setup.optimizer, state["optimizer"], source)
    if state.get("trainer") is not None:
        context.trainer.load_state_dict(dict(state["trainer"]))  # raises on another batch size
    strategy.load_module_state(setup, module_state)
    if state.get("optimizer") is not None:
        strategy.load_optimizer_state(setup, state["optimizer"])
    if state.get("precision"):
        setup.precision.load_state_dict(dict(state["precision"]))


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


def callback_states(callbacks: Iterable[Stateful]) -> dict[str, Any]:
    """Every callback's ``state_dict``, keyed by class name (``Name#i`` for repeats)."""
    return {key: cb.state_dict() for key, cb in _keyed(callbacks)}


def load_callback_states(callbacks: Iterable[Stateful], states: Mapping[str, Any]) -> None:
    """Give each callback the state saved under its key (others are left alone)."""
    for key, cb in _keyed(callbacks):
        if key in states:
            cb.load_state_dict(states[key])


def _keyed(callbacks: Iterable[Stateful]) -> list[tuple[str, Stateful]]:
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        name = type(cb).__name__
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append((name if count == 0 else f"{name}#{count}", cb))
    return out


def _global_tracker_state(context: TrainingContext) -> dict[str, torch.Tensor]:
    """The training metrics' state summed over replicas (zeros at an epoch boundary,
    where the next epoch starts from a reset tracker)."""
    local = context.trainer.state_dict()["tracker"]
    if context.step == 0:
        return {k: torch.zeros_like(v) for k, v in local.items()}
    flat = torch.cat([v.reshape(-1).to(torch.float64) for v in local.values()])
    total = context.strategy.reduce(flat, "sum")
    assert isinstance(total, torch.Tensor)
    parts = torch.split(total.cpu(), [v.numel() for v in local.values()])
    return {k: p.reshape(v.shape).to(v.dtype).clone()
            for (k, v), p in zip(local.items(), parts, strict=True)}


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value.shape) if hasattr(value, "shape") else None


def _names(items: list[str]) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
