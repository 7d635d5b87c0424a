"""One replica on one device: what runs when no strategy is in scope."""

from __future__ import annotations

import functools

import torch

from mirrorfit.cluster.threads import configure_cpu
from mirrorfit.devices import resolve_devices
from mirrorfit.strategies.strategy import Strategy


class OneDeviceStrategy(Strategy):
    """Train on a single device, in this process.

    Args:
        device: ``"cpu"``, ``"cuda:1"``…; None picks the first GPU, else the CPU.

    Example:
        >>> import mirrorfit
        >>> strategy = mirrorfit.OneDeviceStrategy("cpu")
        >>> strategy.num_replicas_in_sync
        1
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        name = str(device) if device is not None else resolve_devices(None)[0]
        self._device = torch.device(resolve_devices([name])[0])
        if self._device.type == "cpu":
            configure_cpu(None)  # one process: the user's (or torch's) thread count


@functools.cache
def default_strategy() -> OneDeviceStrategy:
    return OneDeviceStrategy()
