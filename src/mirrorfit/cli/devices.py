"""`mirrorfit devices`: what this process can train on, and where it sits in a job.

    $ mirrorfit devices
    cpu          16 cores (this process may use 16), no CUDA device visible
    $ CUDA_VISIBLE_DEVICES=1,3 mirrorfit devices
    cuda:0       NVIDIA H100 80GB HBM3   79.1 GiB total, 78.5 GiB free   (physical GPU 1)
    cuda:1       NVIDIA H100 80GB HBM3   79.1 GiB total, 79.1 GiB free   (physical GPU 3)

Under torchrun or a SLURM job, a last line names the environment, the rank,
local rank, node and world size this process has (``--json`` prints all of it
as one JSON object).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["describe", "format_lines", "register"]

_GIB = 1024**3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``devices`` subcommand."""
    p = subparsers.add_parser(
        "devices", help="list the devices mirrorfit sees (with memory) and this process's rank",
        description="Print what mirrorfit.list_devices() returns, with memory on CUDA, "
        "CUDA_VISIBLE_DEVICES, and the rank/node when run under torchrun or SLURM.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=_main)


def describe() -> dict[str, Any]:
    """What ``mirrorfit devices`` prints, as a dict (devices, cores, environment)."""
    import torch

    from mirrorfit.cluster import detect_environment
    from mirrorfit.devices import list_devices

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = [v.strip() for v in visible.split(",")] if visible else None
    devices = []
    for name in list_devices():
        entry: dict[str, Any] = {"device": name}
        if name.startswith("cuda"):
            index = int(name.split(":")[1])
            entry.update(_cuda_info(torch, index))
            if physical and index < len(physical):
                entry["physical"] = physical[index]
        devices.append(entry)
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    info: dict[str, Any] = {"devices": devices, "cpu_cores": cores, "usable_cores": usable,
                            "cuda_visible_devices": visible}
    env = detect_environment()
    if env.name != "local":
        info["environment"] = {"name": env.name, "rank": env.rank, "local_rank": env.local_rank,
                               "node_rank": env.node_rank, "world_size": env.world_size,
                               "local_world_size": env.local_world_size}
    return info


def _cuda_info(torch: Any, index: int) -> dict[str, Any]:
    props = torch.cuda.get_device_properties(index)
    out: dict[str, Any] = {"name": props.name, "total_gib": round(props.total_memory / _GIB, 1)}
    try:
        free, _ = torch.cuda.mem_get_info(index)
        out["free_gib"] = round(free / _GIB, 1)
    except RuntimeError:  # a device another process holds exclusively
        pass
    return out


def format_lines(info: dict[str, Any]) -> list[str]:
    """Human-readable lines for :func:`describe`'s dict."""
    lines = []
    for d in info["devices"]:
        if d["device"] == "cpu":
            lines.append(f"{'cpu':<12} {info['cpu_cores']} cores (this process may use "
                         f"{info['usable_cores']}), no CUDA device visible")
            continue
        memory = f"{d['total_gib']:.1f} GiB total"
        if "free_gib" in d:
            memory += f", {d['free_gib']:.1f} GiB free"
        where = f"   (physical GPU {d['physical']})" if "physical" in d else ""
        lines.append(f"{d['device']:<12} {d['name']}   {memory}{where}")
    env = info.get("environment")
    if env:
        lines.append(f"{env['name']}: rank {env['rank']} of {env['world_size']}, local rank "
                     f"{env['local_rank']} of {env['local_world_size']}, node {env['node_rank']}")
    return lines


def _main(args: argparse.Namespace) -> int:
    info = describe()
    if args.json:
        print(json.dumps(info))
    else:
        print("\n".join(format_lines(info)))
    return 0
