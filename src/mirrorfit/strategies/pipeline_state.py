"""A pipeline stage's part of the training state, keyed by the whole model's names.

Each stage holds the parameters and optimizer state of its own children only; the
other stages' layers stay in the module as meta tensors (shapes, no memory). So
that the stages' parts fit together in one DCP folder, and that such a folder
reads whole on one device like a ShardedStrategy folder:

- the module part is the stage's real tensors under the whole model's names;
- the optimizer part is keyed by parameter name (``{"state": {name: ...},
  "param_groups": [...]}``). In memory a group lists the stage's own names (what its
  optimizer holds); on disk it lists every name of the model, the same on every
  rank, because DCP writes a non-tensor value once, from one rank.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# what get_optimizer_state_dict calls to give a fresh optimizer its (zero) state
from torch.distributed.checkpoint.state_dict import _init_optim_state


def real_only(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without the meta tensors of other stages' layers."""
    return {k: v for k, v in state.items() if not (isinstance(v, torch.Tensor) and v.is_meta)}


def load_owned(module: nn.Module, state: dict[str, Any], owned: Collection[str]) -> None:
    """Copy this stage's tensors of ``state`` (whole-model names) into ``module``."""
    module.load_state_dict({k: state[k] for k in owned}, strict=False)


def named_optimizer_state(optimizer: torch.optim.Optimizer,
                          names: dict[int, str]) -> dict[str, Any]:
    """``optimizer.state_dict()`` keyed by parameter name (``names``: id -> name); an
    optimizer that never stepped gets zero state first (as ShardedStrategy's), so that
    a checkpoint can load into it."""
    _init_optim_state(optimizer)
    state = optimizer.state_dict()
    flat = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {"state": {flat[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [flat[i] for i in g["params"]]}
                             for g in state["param_groups"]]}


def group_names_of(sharded: dict[str, Any],
                   models: Sequence[tuple[Collection[str], list[list[str]]]]) -> list[list[str]]:
    """The optimizer groups (whole-model names) of the model among ``models`` (its
    stage's keys, its groups; newest last) whose state ``sharded`` is.

    Raises:
        RuntimeError: no model was set up (compiled in the strategy's scope).
    """
    keys = frozenset(k for k, v in sharded.get("module", {}).items() if not v.is_meta)
    for owned, names in reversed(models):
        if owned == keys:
            return names
    if not models:
        raise RuntimeError("PipelineStrategy saves and loads the checkpoints of models "
                           "compiled inside its scope(); compile the model there first.")
    return models[-1][1]


def with_all_names(state: dict[str, Any], group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A named optimizer state whose groups list every parameter of the model."""
    groups = [{**g, "params": list(names)}
              for g, names in zip(state["param_groups"], group_names, strict=True)]
    return {**state, "param_groups": groups}


def owned_only(state: dict[str, Any], owned: Collection[str],
               group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """A saved optimizer state (keyed by name, or by index over the whole model as
    ``optimizer.state_dict()`` on one device) cut down to this stage's parameters,
    keyed by name, in the order the stage's optimizer holds them."""
    flat_all = [n for names in group_names for n in names]
    groups = state.get("param_groups", [])
    flat = [p for g in groups for p in g["params"]]
    if flat and not isinstance(flat[0], str):  # keyed by index over the whole model
        to_name = dict(zip(flat, flat_all, strict=True))
        groups = [{**g, "params": [to_name[p] for p in g["params"]]} for g in groups]
        entries = {to_name[k]: v for k, v in state.get("state", {}).items()}
    else:
        entries = dict(state.get("state", {}))
    return {"state": {k: v for k, v in entries.items() if k in owned},
            "param_groups": [{**g, "params": [p for p in g["params"] if p in owned]}
                             for g in groups]}


def indexed_whole(parts: Sequence[dict[str, Any]], own_groups: Sequence[dict[str, Any]],
                  group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Every stage's named optimizer entries (``parts``) as one ``optimizer.state_dict()``
    of the whole model, keyed by index (loads into an optimizer on one device)."""
    flat_all = [n for names in group_names for n in names]
    index = {n: i for i, n in enumerate(flat_all)}
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return {"state": {index[n]: v for n, v in merged.items()},
            "param_groups": [{**g, "params": [index[n] for n in names]}
                             for g, names in zip(own_groups, group_names, strict=True)]}


def to_cpu(value: Any) -> Any:
    """Tensors of a nested state on the CPU (to send them as objects)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    return value


def average_over(grads: Sequence[torch.Tensor], group: Any, replicas: int) -> None:
    """Average ``grads`` in place over the ranks of ``group`` (one all-reduce)."""
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat.div_(replicas)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def clip_global_norm(grads: Sequence[torch.Tensor], max_norm: float, group: Any) -> None:
    """Scale ``grads`` (this stage's) so that the norm over every stage of ``group`` is
    at most ``max_norm``: ``clip_grad_norm_``'s coefficient ``max / (norm + 1e-6)``,
    at most 1, with the squares summed over the stages by one all-reduce."""
    squares = torch.zeros((), dtype=torch.float32, device=grads[0].device if grads else "cpu")
    for g in grads:
        squares += torch.linalg.vector_norm(g).float() ** 2
    dist.all_reduce(squares, group=group)
    coefficient = torch.clamp(max_norm / (squares.sqrt() + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coefficient.to(g.dtype))
