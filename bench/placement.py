"""How much a whole-run comparison of two identical loops moves with where their
tensors land in memory: the seed MLP's hand loop (batch 32, fused Adam, one thread)
run four ways that do the same arithmetic per step, interleaved in one process.

    python bench/placement.py [--rounds 9] [--steps 1000]

- ``hand loop``: a fresh module and ``Adam(fused=True)``, as in ``bench/peers.py``.
- ``eps=1e-7``: the same with Keras's epsilon (mirrorfit's ``"adam"``): same kernels.
- ``8 small tensors first``: the same after allocating a few small tensors between
  building the module and its first step (as any framework's set-up does).
- ``after Model+compile``: the hand loop itself on a module and optimizer that went
  through ``mirrorfit.Model(...).compile("adam", ...)`` (no ``fit``).

Every row runs the hand loop's own code, so a ratio away from 1.00 is not framework
overhead. It is the size of the noise a whole-run comparison such as ``bench/peers.py``
carries on this host. ``bench/fit_overhead.py`` times in lockstep with swapped twins
to cancel it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from seed_mlp import seed_mlp  # bench/, the script's folder
from torch import nn

import mirrorfit

BATCH = 32


def build() -> nn.Module:
    return seed_mlp(seed=0)


def loop(module: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
         y: torch.Tensor) -> float:
    """Seconds per step of the hand loop (index_select batches, running loss sum)."""
    total, perm = torch.zeros((), dtype=torch.float64), torch.randperm(len(x))
    start = time.perf_counter()
    for i in range(0, len(x), BATCH):
        idx = perm[i:i + BATCH]
        opt.zero_grad()
        loss = F.cross_entropy(module(x.index_select(0, idx)), y.index_select(0, idx))
        loss.backward()
        opt.step()
        total += loss.detach()
    float(total)
    return (time.perf_counter() - start) / (len(x) // BATCH)


def variants(x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], float]]:
    kept: list[torch.Tensor] = []

    def plain(eps: float = 1e-8) -> float:
        m = build()
        return loop(m, torch.optim.Adam(m.parameters(), fused=True, eps=eps), x, y)

    def allocated() -> float:
        m = build()
        kept[:] = [torch.zeros((), dtype=torch.float64) for _ in range(8)]
        return loop(m, torch.optim.Adam(m.parameters(), fused=True), x, y)

    def compiled() -> float:
        model = mirrorfit.Model(build())
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
        return loop(model.module, model.optimizer, x, y)

    return {"hand loop": plain, "eps=1e-7": lambda: plain(1e-7),
            "8 small tensors first": allocated, "after Model+compile": compiled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(args.steps * BATCH, 784), torch.randint(0, 10, (args.steps * BATCH,))
    runs = variants(x, y)
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        names = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]  # rotate the order
        for name in names:
            times[name].append(runs[name]())
    base = statistics.median(times["hand loop"])
    print(f"seed MLP, batch {BATCH}, fused Adam, 1 thread, {args.rounds} rounds of "
          f"{args.steps} steps")
    print(f"{'variant':<24}{'us/step':>9}{'vs hand loop':>14}")
    for name, values in times.items():
        mid = statistics.median(values)
        print(f"{name:<24}{mid * 1e6:>9.1f}{mid / base:>13.3f}x")


if __name__ == "__main__":
    main()
