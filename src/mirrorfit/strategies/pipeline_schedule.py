"""Feeding one replica's share through torch's pipeline schedules.

A share of ``n`` samples is split into the most equal chunks, up to
``microbatches``, that divide it. torch's ``PipelineStage`` infers the shapes it
exchanges on its first step and keeps them, so the strategy keeps one stage and
schedule per (share size, chunks, training or not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def chunks(n: int, microbatches: int) -> int:
    """The most chunks, up to ``microbatches``, that split ``n`` samples evenly."""
    return max(c for c in range(1, min(microbatches, max(n, 1)) + 1) if n % c == 0)


def build(module: nn.Module, index: int, stages: int, device: torch.device, group: Any,
          n_chunks: int, schedule: str, loss_fn: Callable[..., torch.Tensor] | None) -> Any:
    """A schedule of ``n_chunks`` over stage ``index`` (``module``); training when
    ``loss_fn`` is given, forward only otherwise."""
    stage = PipelineStage(module, index, stages, device, group=group)
    # 1F1B needs chunks >= stages: a small last batch (and evaluation, which has no
    # backward to interleave) runs GPipe, whose arithmetic is the same
    kind = SCHEDULES[schedule] if loss_fn is not None and n_chunks >= stages else ScheduleGPipe
    # scale_grads=False: the strategy scales the chunk losses by 1/chunks, so gradients
    # accumulated over steps_per_update batches are not divided again
    return kind(stage, n_chunks, loss_fn=loss_fn, scale_grads=False)


def run(schedule: Any, index: int, stages: int, x: Any, target: torch.Tensor | None) -> Any:
    """One step of ``schedule`` on stage ``index``: the first stage is fed ``x``, the
    last gets ``target`` (training) and returns the merged output; others None."""
    args = (x,) if index == 0 else ()
    if index == stages - 1 and target is not None:
        return schedule.step(*args, target=target)
    return schedule.step(*args)


def check_share(n: int, largest: int, microbatches: int, replicas: int) -> None:
    """A share that does not split into ``microbatches`` is an error unless it is smaller
    than one already trained on (a last partial batch, which runs in fewer equal chunks:
    the same arithmetic).

    Raises:
        ValueError: the batch size and the fix.
    """
    if n % microbatches and n >= largest:
        raise ValueError(
            f"PipelineStrategy(microbatches={microbatches}) splits each replica's share of a "
            f"batch into equal chunks; a batch of {n * replicas} samples gives shares of {n}. "
            f"Use a batch_size divisible by {microbatches * replicas}, or change microbatches.")


def batch_size(x: Any) -> int:
    """Samples in ``x``, the first stage's one input tensor.

    Raises:
        TypeError: ``x`` is not one tensor.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"PipelineStrategy feeds the first stage one tensor per batch; received "
                        f"{type(x).__name__}. Pass x as one array.")
    return int(x.shape[0])


def take(value: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a target (a tensor, or a dict/tuple of them)."""
    if isinstance(value, torch.Tensor):
        return value[index]
    if isinstance(value, dict):
        return {k: take(v, index) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(take(v, index) for v in value)
    return value
