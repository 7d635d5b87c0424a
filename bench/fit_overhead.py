"""fit() against a hand-written PyTorch loop: same model, data, optimizer and thread
count, in one process, runs paired and interleaved so machine noise hits both.

    python bench/fit_overhead.py [--steps 300] [--repeats 15] [--threads 1] 2>/dev/null

The hand loop is the fastest plain one we know: one randperm per epoch, batches
by index_select, forward, cross-entropy, backward, Adam, and a running loss and
accuracy (what a loop that logs keeps). Both loops are timed from step
``--warmup`` to the end (allocations of the first steps excluded; for fit, by a
callback), so the figure is the cost per step. Prints ms/step and the median of
the per-pair ratios fit/hand (goal: <= 1.02).
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


# Both loops train the *same* module object, reset to the same initial weights before
# each run, with a fresh Adam each time: fresh modules per run land at different places
# in memory, and that alone moved the per-step time by ~2% on the development VM.
_MODULE = build()
_INITIAL = {k: v.clone() for k, v in _MODULE.state_dict().items()}


def fresh_module() -> nn.Module:
    _MODULE.load_state_dict(_INITIAL)
    return _MODULE


def hand_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, warmup: int) -> float:
    module = fresh_module()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, eps=1e-7)
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.float64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    start = 0.0
    for i in range(steps):
        if i == warmup:
            start = time.perf_counter()
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
    return (time.perf_counter() - start) / (steps - warmup)


class _Clock(mirrorfit.callbacks.Callback):
    """Starts the clock at the beginning of step ``warmup``, stops it when fit ends."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup, self.start, self.stop = warmup, 0.0, 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if batch == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.stop = time.perf_counter()


def fit_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, warmup: int,
             verbose: int) -> float:
    model = mirrorfit.Model(fresh_module())
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
    clock = _Clock(warmup)
    n = steps * batch
    model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=verbose, seed=0,
              callbacks=[clock])
    return (clock.stop - clock.start) / (steps - warmup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    mirrorfit.OneDeviceStrategy("cpu")  # the default strategy's CPU settings, for both loops
    torch.set_num_threads(args.threads)
    (x_np, y_np), _ = mirrorfit.datasets.mnist.load_data()
    x = torch.from_numpy(x_np.reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(y_np.astype(np.int64))
    a = (args.steps, args.batch, args.warmup)
    loops = {
        "hand loop": lambda: hand_loop(x, y, *a),
        "fit verbose=0": lambda: fit_loop(x, y, *a, verbose=0),
        "fit verbose=2": lambda: fit_loop(x, y, *a, verbose=2),
    }
    times: dict[str, list[float]] = {name: [] for name in loops}
    hand_loop(x, y, 40, args.batch, 20)  # warm-up
    for r in range(args.repeats):
        names = list(loops) if r % 2 == 0 else list(reversed(loops))  # alternate the order
        for name in names:
            times[name].append(loops[name]())
    print(f"\nMNIST MLP 784-256-256-10, Adam, batch {args.batch}, {args.threads} thread(s), "
          f"steps {args.warmup}..{args.steps} timed, {args.repeats} paired runs, order alternated")
    print(f"{'loop':<16}{'ms/step':>10}{'ratio (median of pairs)':>26}")
    for name in loops:
        ratios = [t / h for t, h in zip(times[name], times["hand loop"], strict=True)]
        print(f"{name:<16}{statistics.median(times[name]) * 1e3:>10.3f}"
              f"{statistics.median(ratios):>26.3f}")


if __name__ == "__main__":
    main()
