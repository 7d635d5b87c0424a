"""Start-up checks that every replica runs the same job.

Replicas that disagree do not fail loudly by themselves: DDP compares parameter
shapes only when it wraps the module, and ranks that run different numbers of
steps, or reduce different metrics, wait in a collective until the timeout, or
pair unrelated collectives and silently corrupt the result. One
``all_gather_object`` of a small fingerprint at ``compile`` and at the start of
``fit``/``evaluate``/``predict`` turns these into an error on every rank that
names the ranks that differ and what differs. Nothing here runs per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from mirrorfit.strategies.strategy import Strategy

__all__ = ["ReplicaMismatchError", "check_compile", "check_fit", "check_replicas_agree",
           "check_stream", "compile_fingerprint", "data_fingerprint", "module_fingerprint"]

#: differing entries shown per field; the rest are counted
_SHOWN = 5


class ReplicaMismatchError(ValueError):
    """Replicas built different models or were given different data or arguments."""


def module_fingerprint(module: nn.Module) -> list[str]:
    """``"name: shape dtype"`` of every parameter and buffer, in registration order
    (``"name: uninitialized"`` for a lazy module's, whose shape is not known yet)."""
    out = [f"{name}: {_shape_and_dtype(p)}" for name, p in module.named_parameters()]
    out += [f"{name} (buffer): {_shape_and_dtype(b)}" for name, b in module.named_buffers()]
    return out


def _shape_and_dtype(tensor: torch.Tensor) -> str:
    if is_lazy(tensor):  # reading its shape raises; the strategy says what to do
        return "uninitialized"
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def compile_fingerprint(module: nn.Module, optimizer: Any, loss: Any, metrics: Sequence[Any],
                        steps_per_update: int) -> dict[str, Any]:
    """What ``compile`` must agree on: the module's tensors and the compile arguments."""
    return {"parameters and buffers": module_fingerprint(module),
            "optimizer": _name(optimizer), "loss": _name(loss),
            "metrics": [_name(m) for m in metrics], "steps_per_update": steps_per_update}


def data_fingerprint(stream: Any, **arguments: Any) -> dict[str, Any]:
    """Sample count, global batch size and steps per epoch of ``stream``, plus ``arguments``."""
    return {"samples": stream.num_samples(),
            "global batch size": getattr(stream, "batch_size", None),
            "steps per epoch": stream.steps_per_epoch(), **arguments}


def check_compile(strategy: Strategy, module: nn.Module, optimizer: Any, loss: Any,
                  metrics: Sequence[Any], steps_per_update: int) -> None:
    """At ``compile``, before DDP wraps the module: same tensors, same compile arguments."""
    if strategy.num_replicas_in_sync > 1:
        check_replicas_agree(
            strategy, "the model and its compile() arguments",
            compile_fingerprint(module, optimizer, loss, metrics, steps_per_update),
            "Every replica must build the same module (same layer sizes and dtypes) and call "
            "compile() with the same arguments: build them from values that are the same on "
            "every rank, never from the rank or host.")


def check_fit(strategy: Strategy, stream: Any, val: Any, **arguments: Any) -> None:
    """At the start of ``fit``: same training and validation data, same fit arguments."""
    if strategy.num_replicas_in_sync > 1:
        fp = data_fingerprint(stream, **arguments)
        if val is not None:
            fp.update({f"validation {k}": v for k, v in data_fingerprint(val).items()})
        check_replicas_agree(strategy, "the data or the fit() arguments", fp, _DATA_FIX)


def check_stream(strategy: Strategy, stream: Any, method: str) -> None:
    """At the start of ``evaluate``/``predict``: the same data on every replica."""
    if strategy.num_replicas_in_sync > 1:
        check_replicas_agree(strategy, f"the data passed to {method}()",
                             data_fingerprint(stream), _DATA_FIX)


_DATA_FIX = ("Pass the same, whole dataset with the same batch_size and arguments on every "
             "replica: mirrorfit splits each global batch between the replicas itself, so do "
             "not shard the data by rank.")


def check_replicas_agree(strategy: Strategy, what: str, fingerprint: dict[str, Any],
                         fix: str) -> None:
    """Gather ``fingerprint`` from every replica (one collective); raise if any differs.

    Call on every replica at the same point. A no-op with one replica.

    Raises:
        ReplicaMismatchError: on every replica, naming the ranks and the fields that differ.
    """
    if strategy.num_replicas_in_sync < 2:
        return
    everyone = strategy.all_gather_object(fingerprint)
    if all(fp == everyone[0] for fp in everyone[1:]):
        return
    raise ReplicaMismatchError(describe_mismatch(what, everyone, fix))


def describe_mismatch(what: str, everyone: Sequence[dict[str, Any]], fix: str) -> str:
    """The message for fingerprints that differ: each field, each group of ranks."""
    groups = _group_ranks(everyone)
    names = " vs ".join(_ranks(ranks) for ranks, _ in groups)
    lines = [f"The replicas disagree on {what} ({names}):"]
    for key in everyone[0]:
        values = [fp.get(key) for _, fp in groups]
        if all(v == values[0] for v in values[1:]):
            continue
        if all(isinstance(v, list) for v in values):
            lines += _list_diff(key, groups)
        else:
            shown = "; ".join(f"{v!r} on {_ranks(r)}" for (r, _), v in zip(groups, values,
                                                                             strict=True))
            lines.append(f"  {key}: {shown}")
    lines.append(fix)
    return "\n".join(lines)


def _group_ranks(everyone: Sequence[dict[str, Any]]) -> list[tuple[list[int], dict[str, Any]]]:
    groups: list[tuple[list[int], dict[str, Any]]] = []
    for rank, fp in enumerate(everyone):
        for ranks, seen in groups:
            if seen == fp:
                ranks.append(rank)
                break
        else:
            groups.append(([rank], fp))
    return groups


def _list_diff(key: str, groups: list[tuple[list[int], dict[str, Any]]]) -> list[str]:
    """Entries of a list field that are not on every group of ranks."""
    lines = []
    for ranks, fp in groups:
        others = [set(other[key]) for r, other in groups if r is not ranks]
        only = [item for item in fp[key] if any(item not in o for o in others)]
        if only:
            more = f" (and {len(only) - _SHOWN} more)" if len(only) > _SHOWN else ""
            lines.append(f"  {key} only on {_ranks(ranks)} ({len(fp[key])} in all): "
                         + ", ".join(only[:_SHOWN]) + more)
    return lines


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _name(obj: Any) -> str:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return repr(obj)
    return str(getattr(obj, "name", None) or type(obj).__name__)
