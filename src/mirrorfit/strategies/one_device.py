"""One replica on one device: what runs when no strategy is in scope."""

from __future__ import annotations

import torch

from mirrorfit.cluster.threads import configure_cpu
from mirrorfit.devices import resolve_devices
from mirrorfit.strategies.strategy import Strategy


class OneDeviceStrategy(Strategy):
    """Train on a single device, in this process.

    Args:
        device: ``"cpu"``, ``"cuda:1"``…; None picks the first GPU, else the CPU.
        precision: ``"bf16-mixed"``, ``"16-mixed"`` or ``"32"``; None follows
            ``mirrorfit.mixed_precision.global_policy()`` at compile.

    Example:
        >>> import mirrorfit
        >>> strategy = mirrorfit.OneDeviceStrategy("cpu")
        >>> strategy.num_replicas_in_sync
        1
    """

    def __init__(self, device: str | torch.device | None = None, *,
                 precision: str | None = None) -> None:
        super().__init__(precision)
        name = str(device) if device is not None else resolve_devices(None)[0]
        self._device = torch.device(resolve_devices([name])[0])
        if self._device.type == "cpu":
            configure_cpu(None)  # one process: the user's (or torch's) thread count
