"""mirrorfit's fit against its peers on the seed MLP, interleaved in one process.

    pip install lightning accelerate keras        # optional; a missing peer is skipped
    python bench/peers.py [--rounds 15] [--steps 600] [--plot docs/peers.png] 2>/dev/null

The Keras guide's MNIST MLP (784-256-256-10, ReLU, logits), batch 32, Adam
(lr 1e-3), one thread, no metrics, no progress output. Each round runs every
contender once, in an order that rotates from round to round, each beside a run of
the hand loop (just before it in even rounds, just after it in odd ones), so a drift
of the (shared) machine's speed hits both runs of a pair alike. A contender's time
per step runs from its step ``--warmup`` to its last step (set-up and first steps
excluded); its ratio to the hand loop is the median over rounds of the ratio to the
hand-loop run beside it.

Contenders, each written the way its documentation shows:

- ``hand loop``: batches by ``index_select`` from one tensor, forward,
  ``cross_entropy``, backward, ``Adam(fused=True)``, a running loss sum. The baseline.
- ``hand loop, again``: the hand loop a second time, as its own contender: its ratio
  to the first (A/A) is the noise a whole-run comparison carries on this host.
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
Runner = Callable[[int, int], tuple[float, float]]  # (steps, warmup) -> wall, CPU s/step


_INITIAL = seed_mlp(seed=0).state_dict()


def fresh() -> nn.Module:
    module = seed_mlp(seed=None)
    module.load_state_dict(_INITIAL)
    return module


def adam(module: nn.Module, fused: bool = True) -> torch.optim.Optimizer:
    return torch.optim.Adam(module.parameters(), lr=1e-3, fused=True if fused else None)


class Stamps:
    """Clocks at the start of each step and at the end: per-step seconds after warmup.

    Two clocks: the wall clock, and the CPU time of this process (all its threads).
    On a host shared with other jobs, the wall clock also counts the time this
    process waited for a core; the CPU time does not.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def per_step(self, warmup: int) -> tuple[float, float]:
        steps = len(self.wall) - 1 - warmup
        return ((self.wall[-1] - self.wall[warmup]) / steps,
                (self.cpu[-1] - self.cpu[warmup]) / steps)


def hand_runner(x: torch.Tensor, y: torch.Tensor, fused: bool = True) -> Runner:
    def run(steps: int, warmup: int) -> tuple[float, float]:
        module = fresh()
        opt = adam(module, fused)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        loss_sum, stamps = torch.zeros((), dtype=torch.float64), Stamps()
        for i in range(steps):
            stamps.tick()
            idx = order[i * BATCH:(i + 1) * BATCH]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        stamps.tick()
        float(loss_sum)
        return stamps.per_step(warmup)
    return run


def loader(x: torch.Tensor, y: torch.Tensor, steps: int) -> DataLoader:
    n = steps * BATCH
    return DataLoader(TensorDataset(x[:n], y[:n]), batch_size=BATCH, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def dataloader_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    def run(steps: int, warmup: int) -> tuple[float, float]:
        module = fresh()
        opt = adam(module)
        loss_sum, stamps = torch.zeros((), dtype=torch.float64), Stamps()
        for xb, yb in loader(x, y, steps):
            stamps.tick()
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        stamps.tick()
        float(loss_sum)
        return stamps.per_step(warmup)
    return run


def mirrorfit_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    class Clock(mirrorfit.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stamps = Stamps()

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.stamps.tick()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.stamps.tick()

    def run(steps: int, warmup: int) -> tuple[float, float]:
        model = mirrorfit.Model(fresh())
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = Clock()
        n = steps * BATCH
        model.fit(x[:n], y[:n], batch_size=BATCH, epochs=1, verbose=0, seed=0,
                  callbacks=[clock])
        return clock.stamps.per_step(warmup)
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

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.stamps = Stamps()

        def on_train_batch_start(self, *args: Any) -> None:
            self.stamps.tick()

        def on_train_end(self, *args: Any) -> None:
            self.stamps.tick()

    def run(steps: int, warmup: int) -> tuple[float, float]:
        clock = Clock()
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0,
                            callbacks=[clock])
        trainer.fit(MLP(), loader(x, y, steps))
        return clock.stamps.per_step(warmup)
    return run


def accelerate_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    from accelerate import Accelerator

    def run(steps: int, warmup: int) -> tuple[float, float]:
        accelerator = Accelerator(cpu=True)
        module = fresh()
        model, opt, data = accelerator.prepare(module, adam(module), loader(x, y, steps))
        loss_sum, stamps = torch.zeros((), dtype=torch.float64), Stamps()
        for xb, yb in data:
            stamps.tick()
            loss = F.cross_entropy(model(xb), yb)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
        stamps.tick()
        float(loss_sum)
        return stamps.per_step(warmup)
    return run


def keras_runner(x: torch.Tensor, y: torch.Tensor) -> Runner:
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stamps = Stamps()

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.stamps.tick()

        def on_train_end(self, logs: dict | None = None) -> None:
            self.stamps.tick()

    xs, ys = x.numpy(), y.numpy()

    def run(steps: int, warmup: int) -> tuple[float, float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(256, "relu"),
                                  keras.layers.Dense(256, "relu"), keras.layers.Dense(10)])
        model.compile(optimizer=keras.optimizers.Adam(),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=False)
        clock = Clock()
        n = steps * BATCH
        model.fit(xs[:n], ys[:n], batch_size=BATCH, epochs=1, verbose=0, callbacks=[clock])
        return clock.stamps.per_step(warmup)
    return run


PEERS: dict[str, Callable[[torch.Tensor, torch.Tensor], Runner]] = {
    "hand loop": hand_runner,
    "hand loop, again": hand_runner,  # A/A: the noise of whole-run ratios here
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


def quietly(fn: Runner, steps: int, warmup: int) -> tuple[float, float]:
    """Run a contender with its banners and warnings silenced (they are not timed)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(steps, warmup)


BASE = "hand loop"
Times = dict[str, list[tuple[float, float]]]  # contender -> (wall, CPU) s/step per round


def measure(runners: dict[str, Runner], rounds: int, steps: int,
            warmup: int) -> tuple[Times, Times]:
    """Each contender's seconds per step per round, and the hand loop's in a run right
    beside it (before it in even rounds, after it in odd ones): a ratio compares two
    runs a second apart, so a drift of the machine's speed over a round cancels."""
    times: Times = {name: [] for name in runners}
    beside: Times = {name: [] for name in runners}
    others = [n for n in runners if n != BASE]
    for r in range(rounds):
        for name in others[r % len(others):] + others[:r % len(others)]:
            pair = (BASE, name) if r % 2 == 0 else (name, BASE)
            got = {n: quietly(runners[n], steps, warmup) for n in pair}
            times[name].append(got[name])
            beside[name].append(got[BASE])
            times[BASE].append(got[BASE])
        print(f"round {r + 1}/{rounds}, CPU time vs the hand loop beside it: " + ", ".join(
            f"{n} {beside[n][-1][1] / times[n][-1][1]:.3f}" for n in others), flush=True)
    beside[BASE] = times[BASE]
    return times, beside


Row = tuple[str, float, float, float, float]


def table(times: Times, beside: Times, clock: int) -> list[Row]:
    """(name, median steps/s, ratio to the hand loop run beside it: median, min, max
    over rounds) for ``clock`` 0 (wall) or 1 (CPU time)."""
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
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--plot", default=None, help="write a bar chart PNG here")
    args = parser.parse_args()

    mirrorfit.OneDeviceStrategy("cpu")  # mirrorfit's CPU set-up (allocator), for every contender
    torch.set_num_threads(1)
    x, y = mnist_flat()

    runners, missing = {}, []
    for name, make in PEERS.items():
        try:
            runners[name] = make(x, y)
        except ImportError as err:
            missing.append(f"{name} ({err})")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # set at their import
        logging.getLogger(name).setLevel(logging.ERROR)
    load_before = os.getloadavg()[0]
    times, beside = measure(runners, args.rounds, args.steps, args.warmup)
    load_after = os.getloadavg()[0]

    info = versions()
    print(f"\n{cpu_name()}, 1 thread; load average {load_before:.1f} before, "
          f"{load_after:.1f} after; {args.rounds} rounds of {args.steps} steps "
          f"({args.warmup} untimed) at batch {BATCH}")
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
                             f"torch {info['torch']}, {args.rounds} interleaved rounds")
        print(f"\nwrote {args.plot} (CPU time)")


if __name__ == "__main__":
    main()
