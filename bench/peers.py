"""mirrorfit's fit against its peers on the seed MLP, each beside the hand loop in one run.

    pip install lightning accelerate keras        # optional; a missing peer is skipped
    python bench/peers.py [--rounds 15] [--steps 600] [--block 10] [--plot PNG] 2>/dev/null

The Keras guide's MNIST MLP (784-256-256-10, ReLU, logits), batch 32, Adam
(lr 1e-3), one thread, no metrics, no progress output. Each round runs every
contender once, in an order that rotates from round to round. A contender runs its
own loop as its documentation shows, with one call added at the start of each of its
steps (a callback's batch-begin hook, or a line at the top of a hand-written loop):
every ``--block`` steps that call runs ``--block`` steps of the hand loop, on its own
module and optimizer, timed apart. So the contender and the hand loop take turns
every few milliseconds within one run, and a drift of the (shared) machine's speed,
which reaches 10-30% within seconds on a VM, hits both alike. A contender's time per
step is that of its whole blocks from step ``--warmup`` on (set-up, first steps and
the end of the run excluded, as are the hand loop's blocks); its ratio to the hand
loop is the median over rounds of the hand loop's time per step in that run over
the contender's. Each switch costs both loops the same reloading of caches the
other evicted; the row "hand loop, again", the hand loop as a contender of its own,
shows what the method gives for identical code (A/A).

Contenders, each written the way its documentation shows:

- ``hand loop``: batches by ``index_select`` from one tensor, forward,
  ``cross_entropy``, backward, ``Adam(fused=True)``, a running loss sum. The baseline,
  run beside every other contender; its row's steps/s is the median over all those
  runs (its ratio is 1 by definition).
- ``hand loop, again``: the same code as a contender (A/A), in its own sample order
  (the same batches as the loop beside it would still be in the caches).
- ``hand loop + DataLoader``: the same with ``DataLoader(TensorDataset, batch_size=32,
  shuffle=True)``, which Lightning and Accelerate take (the cost of collating 32
  samples per step, apart from any framework).
- ``hand loop, torch's default Adam``: ``torch.optim.Adam(model.parameters())`` as
  most people write it (on the CPU, a Python loop over the parameters).
- ``mirrorfit fit``: ``Model.compile("adam", SparseCategoricalCrossentropy(from_logits=True))``
  and ``fit`` on the arrays (its ``"adam"`` is the fused Adam).
- ``Lightning Trainer``: a ``LightningModule`` whose ``configure_optimizers`` returns
  the fused Adam, ``Trainer(accelerator="cpu", devices=1)``, the DataLoader.
- ``Accelerate``: ``Accelerator(cpu=True).prepare(model, optimizer, loader)``,
  ``accelerator.backward(loss)``, the fused Adam, the DataLoader.
- ``Keras 3 fit (torch)``: the same MLP as a ``keras.Sequential`` of ``Dense`` on
  ``KERAS_BACKEND=torch``, ``keras.optimizers.Adam()``, ``fit`` on numpy arrays,
  ``jit_compile=False``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

import torch
from seed_mlp import mnist_flat, seed_mlp  # bench/, the script's folder
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import mirrorfit

BATCH = 32
Clocks = tuple[float, float]  # (wall, CPU) seconds
Runner = Callable[[int, "Beside"], None]  # (steps, the hand loop beside it) -> None


_INITIAL = seed_mlp(seed=0).state_dict()


def fresh() -> nn.Module:
    module = seed_mlp(seed=None)
    module.load_state_dict(_INITIAL)
    return module


def adam(module: nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=1e-3, fused=True if fused else None)


def clocks() -> Clocks:
    """The wall clock, and the CPU time of this process (all its threads). On a host
    shared with other jobs, the wall clock also counts the time this process waited
    for a core; the CPU time does not."""
    return time.perf_counter(), time.process_time()


class HandLoop:
    """The baseline, one step at a time: ``index_select`` batches, forward,
    ``cross_entropy``, backward, fused Adam, a running loss sum."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, fused: bool = True,
                 seed: int = 0) -> None:
        self.x, self.y = x, y
        self.module = fresh()
        self.opt = adam(self.module, fused)
        self.order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        self.loss_sum = torch.zeros((), dtype=torch.float64)
        self.i = 0

    def step(self) -> None:
        if (self.i + 1) * BATCH > len(self.order):
            self.i = 0
        idx = self.order[self.i * BATCH:(self.i + 1) * BATCH]
        self.i += 1
        xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
        loss = F.cross_entropy(self.module(xb), yb)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach()

    def finish(self) -> None:
        float(self.loss_sum)


class Beside:
    """The hand loop taking turns with a contender: the contender calls :meth:`tick` at
    the start of each of its steps; every ``block`` calls, ``block`` hand-loop steps
    run, timed apart. From step ``warmup`` on, each whole block of the contender's
    steps (from the end of one hand block to the start of the next) and each hand
    block are added to their totals."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, block: int, warmup: int) -> None:
        if warmup % block:
            raise ValueError(f"--warmup {warmup} must be a multiple of --block {block}")
        self.hand = HandLoop(x, y)
        self.block, self.warmup = block, warmup
        self.calls = 0
        self.mark: Clocks | None = None  # the end of the last timed hand block
        self.contender_time, self.hand_time = [0.0, 0.0], [0.0, 0.0]
        self.contender_steps = self.hand_steps = 0

    def tick(self) -> None:
        if self.calls % self.block == 0:
            start = clocks()
            if self.mark is not None:  # the contender's last `block` steps, whole
                self._add(self.contender_time, start, self.mark)
                self.contender_steps += self.block
            for _ in range(self.block):
                self.hand.step()
            end = clocks()
            self.mark = None
            if self.calls >= self.warmup:
                self._add(self.hand_time, end, start)
                self.hand_steps += self.block
                self.mark = end
        self.calls += 1

    @staticmethod
    def _add(total: list[float], later: Clocks, earlier: Clocks) -> None:
        total[0] += later[0] - earlier[0]
        total[1] += later[1] - earlier[1]

    def per_step(self) -> tuple[Clocks, Clocks]:
        """(contender, hand loop) seconds per step, (wall, CPU) each."""
        self.hand.finish()
        if not self.contender_steps:
            raise ValueError("no whole block after the warmup: raise --steps")
        return ((self.contender_time[0] / self.contender_steps,
                 self.contender_time[1] / self.contender_steps),
                (self.hand_time[0] / self.hand_steps, self.hand_time[1] / self.hand_steps))


def hand_runner(x: torch.Tensor, y: torch.Tensor, fused: bool = True) -> Runner:
    def run(steps: int, beside: Beside) -> None:
        # its own order: the same batches as the loop beside it would be warm in the caches
        loop = HandLoop(x, y, fused, seed=1)
        for _ in range(steps):
            beside.tick()
            loop.step()
        loop.finish()
    return run


def loader(x: torch.Tensor, y: torch.Tensor, steps: int) -> DataLoader:
    n = steps * BATCH
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=BATCH, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def dataloader_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    def run(steps: int, beside: Beside) -> None:
        module = fresh()
        opt = adam(module)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for xb, yb in loader(x, y, steps):
            beside.tick()
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        float(loss_sum)
    return run


def mirrorfit_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    class Tick(mirrorfit.callbacks.Callback):
        def __init__(self, beside: Beside) -> None:
            super().__init__()
            self.beside = beside

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.beside.tick()

    def run(steps: int, beside: Beside) -> None:
        model = mirrorfit.Model(fresh())
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
        n = steps * BATCH
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, verbose=0, seed=0,
                  callbacks=[Tick(beside)])
    return run


def lightning_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    import lightning as L

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = fresh()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            xb, yb = batch
            return F.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return adam(self.net)

    class Tick(L.Callback):
        def __init__(self, beside: Beside) -> None:
            self.beside = beside

        def on_train_batch_start(self, *args: Any) -> None:
            self.beside.tick()

    def run(steps: int, beside: Beside) -> None:
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0,
                            callbacks=[Tick(beside)])
        trainer.fit(MLP(), loader(x, y, steps))
    return run


def accelerate_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    from accelerate import Accelerator

    def run(steps: int, beside: Beside) -> None:
        accelerator = Accelerator(cpu=True)
        module = fresh()
        model, opt, data = accelerator.prepare(module, adam(module), loader(x, y, steps))
        loss_sum = torch.zeros((), dtype=torch.float64)
        for xb, yb in data:
            beside.tick()
            loss = F.cross_entropy(model(xb), yb)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        float(loss_sum)
    return run


def keras_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    import keras

    class Tick(keras.callbacks.Callback):
        def __init__(self, beside: Beside) -> None:
            super().__init__()
            self.beside = beside

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.beside.tick()

    xs, ys = x.numpy(), y.numpy()

    def run(steps: int, beside: Beside) -> None:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, "relu"),
                                  keras.layers.Dense(256, "relu"), keras.layers.Dense(10)])
        model.compile(optimizer=keras.optimizers.Adam(),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        n = steps * BATCH
        model.fit(xs[:n], ys[:n], batch_size=BATCH, epochs=1, verbose=0, callbacks=[Tick(beside)])
    return run


PEERS: dict[str, Callable[[torch.Tensor, torch.Tensor], Runner]] = {
    "hand loop, again": hand_runner,  # A/A: what the method gives for identical code
    "hand loop + DataLoader": dataloader_runner,
    "hand loop, torch's default Adam": lambda x, y: hand_runner(x, y, fused=False),
    "mirrorfit fit": mirrorfit_runner,
    "Lightning Trainer": lightning_runner,  # each peer is imported by its runner: a
    "Accelerate": accelerate_runner,        # missing one is skipped
    "Keras 3 fit (torch)": keras_runner,
}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "mirrorfit": mirrorfit.__version__}
    for dist in ("lightning", "accelerate", "keras"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def quietly(fn: Runner, steps: int, beside: Beside) -> None:
    """Run a contender with its banners and warnings silenced (they are not timed)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        fn(steps, beside)


BASE = "hand loop"
Times = dict[str, list[Clocks]]  # contender -> (wall, CPU) s/step per round


def measure(runners: dict[str, Runner], x: torch.Tensor, y: torch.Tensor, rounds: int,
            steps: int, warmup: int, block: int) -> tuple[Times, Times]:
    """Each contender's seconds per step per round, and the hand loop's beside it in the
    same run."""
    times: Times = {name: [] for name in runners}
    beside: Times = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            hand = Beside(x, y, block, warmup)
            quietly(runners[name], steps, hand)
            got, base = hand.per_step()
            times[name].append(got)
            beside[name].append(base)
        print(f"round {r + 1}/{rounds}, CPU time vs the hand loop beside it: " + ", ".join(
            f"{n} {beside[n][-1][1] / times[n][-1][1]:.3f}" for n in names), flush=True)
    times[BASE] = [t for n in names for t in beside[n]]
    beside[BASE] = times[BASE]
    return {BASE: times.pop(BASE), **times}, beside


Row = tuple[str, float, float, float, float]


def table(times: Times, beside: Times, clock: int) -> list[Row]:
    """(name, median steps/s, ratio to the hand loop beside it: median, min, max over
    rounds) for ``clock`` 0 (wall) or 1 (CPU time)."""
    rows = []
    for name, pairs in times.items():
        ts = [t[clock] for t in pairs]
        ratios = [b[clock] / t for b, t in zip(beside[name], ts, strict=True)]
        rows.append((name, 1 / statistics.median(ts), statistics.median(ratios),
                     min(ratios), max(ratios)))
    return rows


def plot(rows: list[Row], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rows][::-1]
    ratios = [r[2] for r in rows][::-1]
    err = [[r[2] - r[3] for r in rows][::-1], [r[4] - r[2] for r in rows][::-1]]
    colors = ["#d62728" if n == "mirrorfit fit" else "#7f7f7f" if n.startswith("hand")
              else "#1f77b4" for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.barh(names, ratios, xerr=err, color=colors, capsize=3)
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, (v, hi) in enumerate(zip(ratios, err[1], strict=True)):
        ax.text(v + hi + 0.02, i, f"{v:.2f}", va="center", fontsize=9)
    ax.set_xlabel("steps/s relative to the hand loop (median over rounds; bars: min-max)")
    ax.set_xlim(0, max(r[4] for r in rows) + 0.2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=600,
                        help="steps per run (timed: those after --warmup)")
    parser.add_argument("--warmup", type=int, default=30,
                        help="untimed first steps of each run, a multiple of --block")
    parser.add_argument("--block", type=int, default=10,
                        help="steps each loop runs before the other takes its turn")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only the contenders whose names start with these, "
                             "e.g. --only mirrorfit 'hand loop, again'")
    parser.add_argument("--plot", default=None, help="write a bar chart PNG here")
    args = parser.parse_args()

    mirrorfit.OneDeviceStrategy("cpu")  # mirrorfit's CPU set-up (allocator), for every contender
    torch.set_num_threads(1)
    x, y = mnist_flat()

    runners, missing = {}, []
    for name, make in PEERS.items():
        if args.only and not name.startswith(tuple(args.only)):
            continue
        try:
            runners[name] = make(x, y)
        except ImportError as err:
            missing.append(f"{name} ({err})")
    if not runners:
        parser.error(f"no contender to run: --only {args.only} names none of {list(PEERS)}"
                     + (f"; skipped: {missing}" if missing else ""))
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # set at their import
        logging.getLogger(name).setLevel(logging.ERROR)
    load_before = os.getloadavg()[0]
    times, beside = measure(runners, x, y, args.rounds, args.steps, args.warmup, args.block)
    load_after = os.getloadavg()[0]

    info = versions()
    print(f"\n{cpu_name()}, 1 thread; load average {load_before:.1f} before, "
          f"{load_after:.1f} after; {args.rounds} rounds of {args.steps} steps "
          f"({args.warmup} untimed) at batch {BATCH}, the hand loop beside each contender "
          f"in blocks of {args.block} steps")
    print(", ".join(f"{k} {v}" for k, v in info.items()))
    if missing:
        print("skipped: " + "; ".join(missing))
    wall, cpu = table(times, beside, 0), table(times, beside, 1)
    print("\n| contender | steps/s, CPU time | vs hand loop | min-max | steps/s, wall | "
          "vs hand loop | min-max |")
    print("|---|---|---|---|---|---|---|")
    for (name, rate, ratio, lo, hi), (_, wrate, wratio, wlo, whi) in zip(cpu, wall, strict=True):
        print(f"| {name} | {rate:.0f} | {ratio:.3f} | {lo:.3f}-{hi:.3f} | {wrate:.0f} | "
              f"{wratio:.3f} | {wlo:.3f}-{whi:.3f} |")
    if args.plot:
        plot(cpu, args.plot, f"MNIST MLP, batch {BATCH}, Adam, 1 CPU thread: CPU time per step\n"
                             f"torch {info['torch']}, {args.rounds} rounds, blocks of {args.block} "
                             "steps beside the hand loop")
        print(f"\nwrote {args.plot} (CPU time)")


if __name__ == "__main__":
    main()
