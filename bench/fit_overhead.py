"""fit() against a hand-written PyTorch loop: same model, data, optimizer and thread
count, in one process.

    python bench/fit_overhead.py [--steps 300] [--repeats 10] [--threads 1] 2>/dev/null

The hand loop is the fastest plain one we know: one randperm per epoch, batches
by index_select, forward, cross-entropy, backward, Adam, and a running loss and
accuracy (what a loop that logs keeps). Steps before ``--warmup`` are not timed.

fit's ``"adam"`` is ``torch.optim.Adam(fused=True)`` (``mirrorfit.optimizers``);
torch's default on the CPU is a Python loop over the parameters. The main rows
give the hand loop the same fused Adam, so the ratio is fit's own overhead; the
row "vs torch's default Adam" times it against the loop as most people write it,
``torch.optim.Adam(model.parameters())``.

Two ways of timing, both printed, each a median over ``--repeats`` runs:

- **lockstep**: fit runs, and after each of its steps a callback runs one step of
  the hand loop on a twin module (same weights, its own Adam), timing it. fit's
  own time is the rest of the step period. Both loops thus share every
  millisecond of machine speed, which on a shared VM drifts by 10-30% within
  seconds. The twins swap roles every other run, so where a module happens to
  sit in memory (worth ~2% here) favours neither loop.
- **paired runs**: whole runs of each loop, one after the other, order
  alternated; the ratio of each pair. Simpler, but a drift between the two runs
  of a pair moves the ratio.

Goal: fit <= 1.02x the hand loop per step.

A third figure, **whole epoch**, times fit as a user first times it: a fresh
module and one ``torch.optim.Adam(module.parameters())`` (torch's default, the
very object the hand loop steps), then ``Model(module)``, ``compile(opt,
nn.CrossEntropyLoss())`` and ``fit(x, y, batch_size=32, epochs=1, verbose=0)``
all inside the timing, against the plain loop ``perm = randperm(n); for each
batch: opt.zero_grad(); loss_fn(m(x[idx]), y[idx]).backward(); opt.step()``
(``--epoch-samples`` samples, ``--epoch-repeats`` pairs, order alternated; an
A/A row times the hand loop against itself). Goal: <= 1.01x.

    python bench/fit_overhead.py --only-epoch 2>/dev/null      # this row alone
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from collections.abc import Callable

import torch
from seed_mlp import mnist_flat, seed_mlp  # bench/, the script's folder
from torch import nn

import mirrorfit


def build() -> nn.Module:
    return seed_mlp(seed=0)


# The loops train the same module objects run after run, reset to the same initial
# weights with a fresh Adam each time: fresh modules per run land at different places
# in memory, and that alone moved the per-step time by ~2% on the development VM.
_TWINS = (build(), build())
_INITIAL = {k: v.clone() for k, v in _TWINS[0].state_dict().items()}


def fresh(i: int = 0) -> nn.Module:
    _TWINS[i].load_state_dict(_INITIAL)
    return _TWINS[i]


class HandLoop:
    """The hand-written loop, one ``step()`` at a time."""

    def __init__(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
                 fused: bool = True) -> None:
        self.module, self.x, self.y, self.batch = module, x, y, batch
        self.opt = torch.optim.Adam(module.parameters(), lr=1e-3, eps=1e-7,
                                    fused=True if fused else None)
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.correct = torch.zeros((), dtype=torch.float64)
        self.order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        self.i = 0

    def step(self) -> None:
        idx = self.order[self.i * self.batch:(self.i + 1) * self.batch]
        self.i += 1
        xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        out = self.module(xb)
        loss = nn.functional.cross_entropy(out, yb)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach() * len(idx)
        self.correct += (out.detach().argmax(1) == yb).sum()

    def finish(self) -> None:
        _ = float(self.loss_sum) + float(self.correct)  # what a logging loop prints


def hand_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int,
              warmup: int) -> float:
    """Seconds per step of a whole hand-loop run."""
    loop = HandLoop(fresh(), x, y, batch)
    start = 0.0
    for i in range(steps):
        if i == warmup:
            start = time.perf_counter()
        loop.step()
    loop.finish()
    return (time.perf_counter() - start) / (steps - warmup)


class _Clock(mirrorfit.callbacks.Callback):
    """The time at each step's start and at the end of fit. With ``twin``, every
    ``block`` steps, ``block`` twin steps run first, timed apart. Only these two hooks:
    a callback with ``on_train_batch_end`` asks fit for every step's global logs."""

    def __init__(self, twin: Callable[[], None] | None = None, block: int = 10) -> None:
        super().__init__()
        self.twin, self.block = twin, block
        self.stamps: list[float] = []
        self.twin_seconds: list[float] = []  # one entry per block

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.twin is not None and batch > 0 and batch % self.block == 0:
            start = time.perf_counter()
            for _ in range(self.block):
                self.twin()
            self.twin_seconds.append(time.perf_counter() - start)
        self.stamps.append(time.perf_counter())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.stamps.append(time.perf_counter())


def run_fit(module: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int,
            verbose: int, clock: _Clock, jit: bool = False) -> None:
    model = mirrorfit.Model(module)
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"], jit_compile=jit)
    n = steps * batch
    model.fit(x[:n], y[:n], batch_size=batch, epochs=1, verbose=verbose, seed=0,
              callbacks=[clock])


def run_hand(module: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int,
             verbose: int, clock: _Clock) -> None:
    """The hand loop driven like fit (same clock hooks): the A/A check of lockstep."""
    loop = HandLoop(module, x, y, batch)
    for i in range(steps):
        clock.on_train_batch_begin(i)
        loop.step()
    loop.finish()
    clock.on_train_end()


def fit_loop(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, warmup: int,
             verbose: int) -> float:
    """Seconds per step of a whole fit run."""
    clock = _Clock()
    run_fit(fresh(), x, y, steps, batch, verbose, clock)
    return (clock.stamps[-1] - clock.stamps[warmup]) / (steps - warmup)


def lockstep(x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, warmup: int,
             verbose: int, fit_twin: int, block: int = 10,
             driver: Callable[..., None] = run_fit, fused: bool = True) -> float:
    """fit's time per step over the hand loop's, the two taking turns every ``block``
    steps (see the module docstring)."""
    if warmup % block or steps % block:
        raise ValueError(f"warmup={warmup} and steps={steps} must be multiples of {block}")
    hand = HandLoop(fresh(1 - fit_twin), x, y, batch, fused)
    clock = _Clock(hand.step, block)
    driver(fresh(fit_twin), x, y, steps, batch, verbose, clock)
    hand.finish()
    # from the stamp of step `warmup` to the end: fit's steps warmup..steps-1, and the
    # twin's blocks run before fit's steps warmup+block, warmup+2*block, ...
    hand_blocks = clock.twin_seconds[warmup // block:]
    fit_seconds = clock.stamps[-1] - clock.stamps[warmup] - sum(hand_blocks)
    return (fit_seconds / (steps - warmup)) / (sum(hand_blocks) / (len(hand_blocks) * block))


def epoch_hand(x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Seconds for one epoch of the plain hand loop, set-up included."""
    module = build()
    opt = torch.optim.Adam(module.parameters())
    start = time.perf_counter()
    loss_fn = nn.CrossEntropyLoss()
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch):
        idx = perm[i:i + batch]
        opt.zero_grad()
        loss_fn(module(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - start


def epoch_fit(x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Seconds for one epoch of fit with the same optimizer object, set-up included."""
    module = build()
    opt = torch.optim.Adam(module.parameters())
    start = time.perf_counter()
    model = mirrorfit.Model(module)
    model.compile(opt, nn.CrossEntropyLoss())
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return time.perf_counter() - start


def whole_epoch(x: torch.Tensor, y: torch.Tensor, batch: int, repeats: int,
                ) -> tuple[list[tuple[float, float]], list[float]]:
    """``(hand, fit)`` seconds per pair, order alternated, and the A/A ratios (the hand
    loop timed against itself in the same alternation)."""
    epoch_hand(x, y, batch), epoch_fit(x, y, batch)  # warm-up: first-call costs of both
    pairs, same = [], []
    for r in range(repeats):
        if r % 2 == 0:
            h = epoch_hand(x, y, batch)
            pairs.append((h, epoch_fit(x, y, batch)))
        else:
            f = epoch_fit(x, y, batch)
            pairs.append((epoch_hand(x, y, batch), f))
        a, b = epoch_hand(x, y, batch), epoch_hand(x, y, batch)
        same.append(b / a if r % 2 == 0 else a / b)
    return pairs, same


def report_epoch(n: int, batch: int, pairs: list[tuple[float, float]],
                 same: list[float]) -> None:
    ratios = [f / h for h, f in pairs]
    print(f"\nwhole epoch with set-up: {n} samples, batch {batch}, torch.optim.Adam (the same "
          f"object), fresh module per run, {len(pairs)} pairs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'whole epoch':<12}{statistics.median(ratios):>16.3f}"
          f"{f'{min(ratios):.3f}-{max(ratios):.3f}':>14}"
          f"{'hand ms':>10}{statistics.median(h for h, _ in pairs) * 1e3:>9.1f}"
          f"{'fit ms':>9}{statistics.median(f for _, f in pairs) * 1e3:>9.1f}")
    print(f"{'A/A check':<12}{statistics.median(same):>16.3f}"
          f"{f'{min(same):.3f}-{max(same):.3f}':>14}")
    print("(ratio: fit's epoch over the hand loop's, set-up included; goal <= 1.01)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epoch-samples", type=int, default=20000)
    parser.add_argument("--epoch-batch", type=int, default=32)
    parser.add_argument("--epoch-repeats", type=int, default=5)
    parser.add_argument("--only-epoch", action="store_true", help="the whole-epoch row only")
    args = parser.parse_args()
    mirrorfit.OneDeviceStrategy("cpu")  # the default strategy's CPU settings, for both loops
    torch.set_num_threads(args.threads)
    x, y = mnist_flat()
    xe, ye = x[:args.epoch_samples], y[:args.epoch_samples]
    epoch_rows = whole_epoch(xe, ye, args.epoch_batch, args.epoch_repeats)
    if args.only_epoch:
        report_epoch(len(xe), args.epoch_batch, *epoch_rows)
        return
    a = (x, y, args.steps, args.batch, args.warmup)
    hand_loop(x, y, 40, args.batch, 20)  # warm-up
    same = [lockstep(*a, 0, r % 2, driver=run_hand) for r in range(args.repeats)]
    rows = []
    for verbose in (0, 2):
        locked = [lockstep(*a, verbose, r % 2) for r in range(args.repeats)]
        paired = []
        for r in range(args.repeats):
            first, second = (hand_loop, fit_loop) if r % 2 == 0 else (fit_loop, hand_loop)
            t1 = first(*a) if first is hand_loop else first(*a, verbose)
            t2 = second(*a) if second is hand_loop else second(*a, verbose)
            paired.append((t1, t2) if first is hand_loop else (t2, t1))
        rows.append((verbose, locked, paired))
    default = [lockstep(*a, 0, r % 2, fused=False) for r in range(args.repeats)]
    jit = functools.partial(run_fit, jit=True)  # compiles within the warm-up steps
    compiled = [lockstep(*a, 0, r % 2, driver=jit) for r in range(min(3, args.repeats))]
    report(args, rows, same, default, compiled)
    report_epoch(len(xe), args.epoch_batch, *epoch_rows)  # beside the lockstep figure


def report(args: argparse.Namespace, rows: list, same: list[float],  # type: ignore[type-arg]
           default: list[float], compiled: list[float]) -> None:
    print(f"\nMNIST MLP 784-256-256-10, Adam, batch {args.batch}, {args.threads} thread(s), "
          f"steps {args.warmup}..{args.steps} timed, {args.repeats} runs each, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'fit':<12}{'lockstep ratio':>16}{'(min-max)':>14}{'paired ratio':>14}"
          f"{'hand ms/step':>14}{'fit ms/step':>13}")
    for verbose, locked, paired in rows:
        ratios = [f / h for h, f in paired]
        print(f"{'verbose=' + str(verbose):<12}{statistics.median(locked):>16.3f}"
              f"{f'{min(locked):.3f}-{max(locked):.3f}':>14}{statistics.median(ratios):>14.3f}"
              f"{statistics.median(h for h, _ in paired) * 1e3:>14.3f}"
              f"{statistics.median(f for _, f in paired) * 1e3:>13.3f}")
    print(f"{'A/A check':<12}{statistics.median(same):>16.3f}"
          f"{f'{min(same):.3f}-{max(same):.3f}':>14}")
    print(f"{'vs default':<12}{statistics.median(default):>16.3f}"
          f"{f'{min(default):.3f}-{max(default):.3f}':>14}")
    print(f"{'jit_compile':<12}{statistics.median(compiled):>16.3f}"
          f"{f'{min(compiled):.3f}-{max(compiled):.3f}':>14}")
    print("(ratios: fit / hand loop per step; goal <= 1.02. The hand loop uses fit's fused\n"
          " Adam, except 'vs default': verbose=0 against torch.optim.Adam's default (a\n"
          " per-parameter loop on the CPU). A/A check: the hand loop in fit's place; 1.000\n"
          " shows that lockstep favours neither side. jit_compile: fit with\n"
          " compile(jit_compile=True) against the eager hand loop, min(3, repeats) runs)")


if __name__ == "__main__":
    main()
