"""fit() against a hand-written PyTorch loop: same model, data, optimizer and thread
count, in one process, runs interleaved (A B A B …) so machine noise hits both.

    python bench/fit_overhead.py [--steps 300] [--repeats 5] [--threads 1]

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
    timings: dict[str, list[float]] = {"hand loop": [], "fit verbose=0": [], "fit verbose=2": []}
    hand_loop(x, y, 20, args.batch)  # warm-up
    for _ in range(args.repeats):
        timings["hand loop"].append(hand_loop(x, y, args.steps, args.batch))
        timings["fit verbose=0"].append(fit_loop(x, y, args.steps, args.batch, 0))
        timings["fit verbose=2"].append(fit_loop(x, y, args.steps, args.batch, 2))
    base = statistics.median(timings["hand loop"])
    print(f"\nMNIST MLP 784-256-256-10, Adam, batch {args.batch}, {args.steps} steps, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved runs")
    print(f"{'loop':<16}{'ms/step':>10}{'ratio':>8}")
    for name, values in timings.items():
        med = statistics.median(values)
        print(f"{name:<16}{med * 1e3:>10.3f}{med / base:>8.3f}")


if __name__ == "__main__":
    main()
