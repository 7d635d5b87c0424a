"""Synchronised BatchNorm that works wherever torch.distributed does (CPU/gloo too).

``torch.nn.SyncBatchNorm`` refuses CPU tensors in torch 2.13 ("SyncBatchNorm
expected input tensor to be on GPU or XPU", measured on gloo), and DDP refuses
any ``nn.SyncBatchNorm`` layer in a CPU module ("SyncBatchNorm layers only work
with GPU modules"). So mirrorfit converts BatchNorm layers (torch's
SyncBatchNorm too) to its own :class:`SyncBatchNorm`, a BatchNorm whose training
forward uses plain ops and one all-reduce:

- each replica sums ``x`` and ``x²`` per channel in float64 and counts its
  samples; one all-reduce of ``[sum, sumsq, count]`` gives the global mean and
  variance, weighted by sample count, so uneven shares are exact;
- the backward all-reduces the gradients of those sums (a differentiable
  all-reduce), which is the ``[Σdy, Σdy·x̂]`` exchange of the usual SyncBN backward;
- the dummy sample of an empty share (see ``data.batches``) counts zero: inside
  :func:`weightless_share` a synced layer adds nothing to the statistics and an
  unsynced BatchNorm uses its running statistics (eval mode) for that forward.

Without a process group (one replica) and in eval mode the layer is exactly
torch's BatchNorm. The same code runs on CUDA (torch's fused kernels are not
used), so empty shares are handled the same on every device.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.lazy import LazyModuleMixin

_state = threading.local()


class _AllReduceSum(torch.autograd.Function):
    """Sum over replicas; its gradient is the sum of the replicas' gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = grad.contiguous().clone()
        dist.all_reduce(out, group=ctx.group)
        return out, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span every replica, weighted by sample count.

    Build it with :func:`convert_sync_batchnorm` (or ``MirroredStrategy(sync_batchnorm=True)``);
    it takes inputs of any BatchNorm (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, …).

    Example:
        >>> import torch
        >>> from mirrorfit.strategies.sync_batchnorm import convert_sync_batchnorm
        >>> net = convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
        >>> type(net[0]).__name__, isinstance(net[0], torch.nn.modules.batchnorm._BatchNorm)
        ('SyncBatchNorm', True)
        >>> net(torch.randn(4, 3)).shape      # one replica: plain BatchNorm
        torch.Size([4, 3])
    """

    process_group: Any = None

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2 or input.shape[1] != self.num_features:
            raise ValueError(f"SyncBatchNorm({self.num_features}) expects input of shape "
                             f"(N, {self.num_features}, ...); received {tuple(input.shape)}.")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and _group_size(self.process_group) > 1:
            self._check_input_dim(input)
            return _synced_forward(self, input)
        return super().forward(input)  # eval or one replica: torch's batch_norm


def _group_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size(group or dist.group.WORLD))


def _synced_forward(bn: SyncBatchNorm, x: torch.Tensor) -> torch.Tensor:
    channels = x.shape[1]
    dims = [0, *range(2, x.dim())]
    weight = 0.0 if getattr(_state, "weightless", False) else 1.0
    x64 = x.to(torch.float64)
    local = torch.cat([x64.sum(dims) * weight, (x64 * x64).sum(dims) * weight,
                       x64.new_full((1,), weight * (x.numel() // channels))])
    total = _AllReduceSum.apply(local, bn.process_group or dist.group.WORLD)
    count = total[-1].clamp(min=1.0)
    mean = total[:channels] / count
    var = (total[channels:2 * channels] / count - mean * mean).clamp(min=0.0)
    _update_running_stats(bn, mean.detach(), var.detach(), total[-1].detach())
    shape = [1, channels] + [1] * (x.dim() - 2)
    invstd = torch.rsqrt(var + bn.eps)
    y = (x - mean.to(x.dtype).view(shape)) * invstd.to(x.dtype).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y


@torch.no_grad()
def _update_running_stats(bn: SyncBatchNorm, mean: torch.Tensor, var: torch.Tensor,
                          count: torch.Tensor) -> None:
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return
    assert bn.num_batches_tracked is not None
    bn.num_batches_tracked.add_(1)
    momentum = (bn.momentum if bn.momentum is not None
                else 1.0 / float(bn.num_batches_tracked))
    unbiased = var * count / (count - 1.0).clamp(min=1.0)  # what torch's BatchNorm tracks
    bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.dtype), alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None) -> nn.Module:
    """Turn every BatchNorm layer of ``module`` into :class:`SyncBatchNorm`, in place.

    Parameters, buffers and ``state_dict`` keys are unchanged (the layers change
    class), so an optimizer built before the conversion stays valid. Torch's own
    ``nn.SyncBatchNorm`` layers are converted too (its process group is kept).
    Returns ``module``.
    """
    for m in module.modules():
        if (isinstance(m, _BatchNorm) and type(m) is not SyncBatchNorm
                and not isinstance(m, LazyModuleMixin)):
            m.__class__ = SyncBatchNorm
            m.process_group = getattr(m, "process_group", None) or process_group
    return module


@contextlib.contextmanager
def weightless_share(module: nn.Module) -> Iterator[None]:
    """A training forward whose samples carry no weight (an empty share's dummy).

    Synced layers add zero to the statistics (they still take part in the
    all-reduce); unsynced BatchNorm layers run in eval mode, so neither their
    running statistics nor a one-sample batch error come from the dummy.
    """
    plain = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training
             and not isinstance(m, (SyncBatchNorm, nn.SyncBatchNorm))]
    _state.weightless = True
    for m in plain:
        m.eval()
    try:
        yield
    finally:
        _state.weightless = False
        for m in plain:
            m.train()
