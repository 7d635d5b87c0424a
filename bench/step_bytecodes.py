"""Python bytecodes per training step: fit's own, and torch's, against a hand loop.

    python bench/step_bytecodes.py [--metrics accuracy] 2>/dev/null

Counts (does not time) the bytecodes the interpreter runs per step on the seed MLP
(MNIST, batch 32, fused Adam), per source file: a tracer counts every opcode of
``fit`` over 200 steps and over 100 steps, and the difference over 100 is the
steady step. The hand loop of ``bench/peers.py`` (``index_select`` batches, forward,
``cross_entropy``, backward, step, zero, a running loss; one method call per step)
is counted the same way. The count is the
same on any host, so a change to fit's hot path shows in it where a timing cannot
resolve it (``bench/peers.py`` and ``bench/fit_cost.py`` time it).
"""

from __future__ import annotations

import argparse
import collections
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from peers import HandLoop  # bench/, the script's folder
from seed_mlp import mnist_flat, seed_mlp

import mirrorfit

Counts = collections.Counter[str]


def counted(run: Callable[[], None]) -> Counts:
    """Opcodes run by ``run()``'s callees, per file (the file's path from its package)."""
    counts: Counts = collections.Counter()

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            name = frame.f_code.co_filename
            for marker in ("site-packages/", "/src/"):
                name = name.split(marker)[-1]
            counts[name] += 1
        return tracer

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return counts


def fit_run(x: torch.Tensor, y: torch.Tensor, steps: int, metrics: list[str]) -> Callable[[], None]:
    model = mirrorfit.Model(seed_mlp(seed=0))
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics)
    n = steps * 32
    return lambda: model.fit(x[:n], y[:n], batch_size=32, epochs=1, verbose=0, seed=0)


def hand_run(x: torch.Tensor, y: torch.Tensor, steps: int) -> Callable[[], None]:
    loop = HandLoop(x, y)

    def run() -> None:
        for _ in range(steps):
            loop.step()
        loop.finish()
    return run


def per_step(make: Callable[[int], Callable[[], None]]) -> Counts:
    make(10)()  # first-call work
    short, long = counted(make(100)), counted(make(200))
    return collections.Counter({k: (long[k] - short[k]) / 100
                                for k in set(short) | set(long)})  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--metrics", nargs="*", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = mnist_flat(10_000)
    fit = per_step(lambda steps: fit_run(x, y, steps, args.metrics))
    hand = per_step(lambda steps: hand_run(x, y, steps))
    own = {k: v for k, v in fit.items() if k.startswith("mirrorfit/") and v >= 0.5}
    print(f"bytecodes per step, seed MLP, batch 32, metrics {args.metrics or 'none'}")
    for name, v in sorted(own.items(), key=lambda kv: -kv[1]):
        print(f"{v:8.1f}  {name}")
    others = sum(v for k, v in fit.items() if not k.startswith("mirrorfit/"))
    hand_total = sum(hand.values())
    print(f"{sum(own.values()):8.1f}  mirrorfit, in all")
    print(f"{others:8.1f}  the rest of fit's step (torch, the standard library)")
    print(f"{hand_total:8.1f}  the hand loop's step (its own loop and torch)")


if __name__ == "__main__":
    main()
