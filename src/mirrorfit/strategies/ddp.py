"""DDP for mirrorfit: parameters that get no gradient are named, never a riddle.

DDP all-reduces gradients in buckets; a parameter that takes no part in the loss
leaves its bucket unfinished and torch fails at the *next* forward with
"Expected to have finished reduction in the prior iteration…" (PITFALLS 8).
mirrorfit handles this in two places:

- ``Model.fit`` runs its first update under ``no_sync`` and then calls
  :func:`finish_first_update`, which finds the parameters without a gradient on
  any replica, averages the gradients by hand (one all-reduce), and either
  rewraps the module with ``find_unused_parameters=True`` (the default, ``None``:
  detect) or raises :class:`UnusedParametersError` naming them (``False``).
- :class:`MirroredDDP` turns torch's error into :class:`UnusedParametersError`
  naming the parameters, for parameters that go unused later, or in a
  hand-written loop (``strategy.distribute``).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel

from mirrorfit.strategies import process_group

_RIDDLE = "Expected to have finished reduction"
_INDICES = re.compile(r"did not receive grad for rank (\d+): ([\d ]+)")
_FIX = ("Pass MirroredStrategy(find_unused_parameters=True) (DDP then walks the autograd "
        "graph each step, a small cost), freeze them with p.requires_grad_(False), or make "
        "them take part in the loss.")


class UnusedParametersError(RuntimeError):
    """Some parameters got no gradient in a step while DDP expected all of them."""


class MirroredDDP(DistributedDataParallel):
    """``DistributedDataParallel`` that explains unused parameters by name.

    Args:
        module: the network (already on its device).
        unused_mode: ``None`` detect on ``fit``'s first update, ``True`` let DDP find
            unused parameters every step, ``False`` require every parameter every step.
        **kwargs: passed to ``DistributedDataParallel``.

    Example:
        >>> ddp = MirroredDDP(net, unused_mode=None)   # doctest: +SKIP (needs a process group)
    """

    def __init__(self, module: nn.Module, *, unused_mode: bool | None = None,
                 **kwargs: Any) -> None:
        super().__init__(module, find_unused_parameters=bool(unused_mode), **kwargs)
        self.unused_mode = unused_mode

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        try:
            return super().forward(*inputs, **kwargs)
        except RuntimeError as exc:
            if _RIDDLE not in str(exc):
                raise
            raise UnusedParametersError(_explain(self.module, str(exc))) from None


def wrap(module: nn.Module, device: torch.device, unused_mode: bool | None) -> MirroredDDP:
    """``module`` (on ``device``) in a :class:`MirroredDDP`."""
    ids = [device.index] if device.type == "cuda" else None
    return MirroredDDP(module, unused_mode=unused_mode, device_ids=ids,
                       process_group=process_group.ddp_group())


def needs_first_update_check(wrapped: nn.Module) -> bool:
    """True when ``fit`` should run its first update through :func:`finish_first_update`."""
    return isinstance(wrapped, MirroredDDP) and wrapped.unused_mode is not True


def trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) in the order DDP indexes them (shared parameters once)."""
    seen: set[int] = set()
    out = []
    for name, p in module.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def finish_first_update(wrapped: nn.Module) -> MirroredDDP:
    """After a backward under ``no_sync``: check for unused parameters and average grads.

    Returns the module to train with (``wrapped``, or a new wrapper with
    ``find_unused_parameters=True`` when some parameters got no gradient).

    Raises:
        UnusedParametersError: some parameters got no gradient and
            ``unused_mode`` is False; the message names them.
    """
    if not isinstance(wrapped, MirroredDDP):
        raise TypeError(f"finish_first_update needs a MirroredDDP; received "
                        f"{type(wrapped).__name__}.")
    named = trainable_parameters(wrapped.module)
    local = [name for name, p in named if p.grad is None]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    unused_somewhere = {n for names in gathered for n in names}
    unused_everywhere = set.intersection(*(set(names) for names in gathered))
    if unused_somewhere and wrapped.unused_mode is False:
        raise UnusedParametersError(
            f"These parameters got no gradient in the first step: "
            f"{_listed(unused_somewhere, named)}. MirroredStrategy(find_unused_parameters="
            f"False) needs every trainable parameter in every step. {_FIX}")
    # globally unused parameters keep grad None, as in one process (no optimizer update)
    params = [p for name, p in named if name not in unused_everywhere]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if grads:
        flat = _flatten_dense_tensors(grads).div_(dist.get_world_size())
        dist.all_reduce(flat)
        for p, g in zip(params, _unflatten_dense_tensors(flat, grads), strict=True):
            p.grad = g
    if not unused_somewhere:
        return wrapped
    if dist.get_rank() == 0:
        warnings.warn(
            f"mirrorfit: {_listed(unused_somewhere, named)} got no gradient in the first step; "
            "training goes on with DDP's find_unused_parameters=True. Pass "
            "MirroredStrategy(find_unused_parameters=True) to skip this check, or freeze them.",
            stacklevel=3)
    return _rewrap(wrapped)


def _rewrap(wrapped: MirroredDDP) -> MirroredDDP:
    # the old wrapper's reducer hooks stay idle (its last forward ran under no_sync) and go
    # when the trainer drops it
    return MirroredDDP(wrapped.module, unused_mode=True, device_ids=wrapped.device_ids)


def _listed(names: set[str], named: list[tuple[str, nn.Parameter]]) -> str:
    ordered = [n for n, _ in named if n in names]
    return ", ".join(repr(n) for n in ordered)


def _explain(module: nn.Module, message: str) -> str:
    found = _INDICES.search(message)
    named = trainable_parameters(module)
    if found:
        idx = [int(i) for i in found.group(2).split()]
        names = [named[i][0] if i < len(named) else f"#{i}" for i in idx]
        which = f"on rank {found.group(1)}: {', '.join(repr(n) for n in names)}"
    else:
        which = "(torch did not say which)"
    return (f"Some parameters got no gradient in the previous step {which}. DDP was told every "
            f"trainable parameter takes part in every step. {_FIX}")
