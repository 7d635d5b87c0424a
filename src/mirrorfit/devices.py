"""Device discovery and the ``devices=`` argument of strategies."""

from __future__ import annotations

from collections.abc import Sequence

import torch

DeviceSpec = int | str | Sequence[int | str] | None


def list_devices() -> list[str]:
    """The devices training can use: ``["cuda:0", "cuda:1", …]``, or ``["cpu"]``.

    ``CUDA_VISIBLE_DEVICES`` is respected (torch numbers the visible devices).
    """
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(n)] or ["cpu"]


def resolve_devices(devices: DeviceSpec) -> list[str]:
    """One device string per replica.

    ``None``: every GPU, else one CPU replica. An int n: the first n GPUs, or n
    CPU worker processes on a host without GPUs. A list: ``["cuda:0", 2, "cpu"]``.

    Raises:
        ValueError: an unknown device, a count < 1, or more GPUs than exist.
    """
    available = list_devices()
    gpus = [d for d in available if d.startswith("cuda")]
    if devices is None:
        return gpus or ["cpu"]
    if isinstance(devices, bool) or not isinstance(devices, (int, str, Sequence)):
        raise ValueError(f"devices must be None, a count or a list of devices; received "
                         f"{devices!r}.")
    if isinstance(devices, int):
        if devices < 1:
            raise ValueError(f"devices must be >= 1, received devices={devices}.")
        if not gpus:
            return ["cpu"] * devices
        if devices > len(gpus):
            raise ValueError(_too_many(devices, gpus))
        return gpus[:devices]
    items = [devices] if isinstance(devices, str) else list(devices)
    if not items:
        raise ValueError("devices=[] names no device; pass None for all GPUs or a count.")
    resolved = [_one(d, gpus) for d in items]
    if len({d for d in resolved if d != "cpu"}) != len([d for d in resolved if d != "cpu"]):
        raise ValueError(f"devices={devices!r} names a GPU twice; each replica needs its own.")
    if len({d.split(":")[0] for d in resolved}) > 1:
        raise ValueError(f"devices={devices!r} mixes CPU and CUDA replicas; pick one kind.")
    return resolved


def _one(device: int | str, gpus: list[str]) -> str:
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        name = f"cuda:{int(device)}"
    elif isinstance(device, str) and (device == "cpu" or device.startswith("cpu:")):
        return "cpu"
    elif isinstance(device, str) and device in ("cuda", "gpu"):
        name = "cuda:0"
    elif isinstance(device, str) and device.startswith(("cuda:", "gpu:")):
        name = "cuda:" + device.split(":", 1)[1]
    else:
        raise ValueError(f"Unknown device {device!r}; expected 'cpu', 'cuda:N' or an index N.")
    if name not in gpus:
        raise ValueError(_too_many(name, gpus))
    return name


def _too_many(asked: int | str, gpus: list[str]) -> str:
    have = ", ".join(gpus) if gpus else "none"
    return (f"devices={asked!r} asks for more GPUs than this host has ({len(gpus)} visible: "
            f"{have}). Pass a smaller count, a list of existing devices, or check "
            "CUDA_VISIBLE_DEVICES.")
