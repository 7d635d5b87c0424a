"""fit() against a hand-written PyTorch loop: same model, data, optimizer and thread
count, in one process, runs interleaved (A B A B …) so machine noise hits both.

    python bench/fit_overhead.py [--steps 300] [--repeats 5] [--threads 1] 2>/dev/null | tail -6

The hand loop is the fastest plain one we know: one randperm per epoch, batches
by index_select, forward, cross-entropy, backward, Adam, and a running loss and
accuracy (what a loop that logs keeps). fit() runs with verbose=0 and verbose=2.
Prints ms/step for each and the ratio fit/hand (goal: <= 1.02).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

import mirrorfit


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def hand_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> float:
    module = build()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, eps=1e-7)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for i in range(steps):
        idx = order[i * batch:(i + 1) * batch]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        out = module(xb)
        loss = nn.functional.cross_entropy(out, yb)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach() * len(idx)
        correct += (out.detach().argmax(1) == yb).sum()
    _ = float(loss_sum) + float(correct)
    return (time.perf_counter() - start) / steps


def fit_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, verbose: int) -> float:
    model = mirrorfit.Model(build())
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    n = steps * batch
    start = time.perf_counter()
    model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=verbose, seed=0)
    return (time.perf_counter() - start) / steps


def per_step(fn, steps: int) -> float:
    """Seconds per step from the slope between a 2N-step and an N-step run, so fixed
    per-call costs (building the optimizer state, fit's set-up) cancel out."""
    short, long = fn(steps), fn(2 * steps)
    return (long * 2 * steps - short * steps) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    mirrorfit.OneDeviceStrategy("cpu")  # the default strategy's CPU settings, for both loops
    torch.set_num_threads(args.threads)
    (x_np, y_np), _ = mirrorfit.datasets.mnist.load_data()
    x = torch.from_numpy(x_np.reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(y_np.astype(np.int64))
    loops = {
        "hand loop": lambda n: hand_loop(x, y, n, args.batch),
        "fit verbose=0": lambda n: fit_loop(x, y, n, args.batch, 0),
        "fit verbose=2": lambda n: fit_loop(x, y, n, args.batch, 2),
    }
    timings: dict[str, list[float]] = {name: [] for name in loops}
    calls: dict[str, list[float]] = {name: [] for name in loops}
    hand_loop(x, y, 20, args.batch)  # warm-up
    for r in range(args.repeats):
        names = list(loops) if r % 2 == 0 else list(reversed(loops))  # alternate the order
        for name in names:
            timings[name].append(per_step(loops[name], args.steps))
            calls[name].append(loops[name](args.steps))
    base = statistics.median(timings["hand loop"])
    base_call = statistics.median(calls["hand loop"])
    print(f"\nMNIST MLP 784-256-256-10, Adam, batch {args.batch}, {args.threads} thread(s), "
          f"median of {args.repeats} runs, order alternated")
    print(f"{'loop':<16}{'ms/step':>10}{'ratio':>8}{'ms/step incl. set-up':>24}{'ratio':>8}")
    for name in loops:
        med, call = statistics.median(timings[name]), statistics.median(calls[name])
        print(f"{name:<16}{med * 1e3:>10.3f}{med / base:>8.3f}"
              f"{call * 1e3:>24.3f}{call / base_call:>8.3f}")
    print(f"(ms/step: slope between {2 * args.steps}- and {args.steps}-step runs; "
          f"incl. set-up: one {args.steps}-step run / {args.steps})")


if __name__ == "__main__":
    main()
