"""Input pipeline benchmarks: mirrorfit.data.Dataset against the usual alternatives.

Every ratio compares two measurements taken side by side in this run (interleaved,
best of ``--repeats``), on one torch thread:

1. One shuffled epoch of MNIST batches of 32, no model, iterator creation included:
   ``Dataset`` vs ``DataLoader(TensorDataset)``. Goal: >= 5x the batches/s.
   Also as a user times it, everything built fresh inside the timing:
   ``Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(32)`` iterated once vs
   ``DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)``, in ``--pairs``
   pairs (order alternating), the median of the pairs' ratios; the A/A row times two
   fresh DataLoaders the same way (it should read 1.00x). Goal: >= 8x.
2. A map that sleeps 2 ms per batch, a "model step" that sleeps 2 ms: the epoch with
   ``prefetch`` vs the model steps alone. Goal: <= 1.1x.
3. ``cache()`` on a slow source: the second epoch vs the first. Goal: >= 10x faster.

Run: ``.venv/bin/python bench/data_pipeline.py`` (``--quick`` for a smoke run; ``--only-fresh``
for the fresh-epoch row alone, in a process that ran nothing before it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from mirrorfit.data import Dataset, Replica

Row = tuple[str, str, str, float, str, bool]
SLEEP_S = 0.002


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _best(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best time of each function, runs interleaved so both see the same machine load."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], _seconds(fn))
    return best


def _drain(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)


def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    from mirrorfit.datasets import mnist

    (x, y), _ = mnist.load_data()
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def bench_mnist(repeats: int, quick: bool) -> list[Row]:
    x, y = _mnist()
    if quick:
        x, y = x[:6000], y[:6000]
    steps = -(-len(x) // 32)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    ds = Dataset.from_tensor_slices((x, y)).shuffle().batch(32)
    epochs = iter(range(10**9))

    def sharded(world: int) -> int:
        stream = ds._as_batch_stream(replica=Replica(0, world), shuffle=True, seed=0)
        return _drain(stream.iter_epoch(next(epochs)))

    t = _best({"loader": lambda: _drain(iter(loader)), "dataset": lambda: _drain(iter(ds)),
               "fit-1": lambda: sharded(1), "fit-2": lambda: sharded(2)}, repeats)
    rate = {k: steps / v for k, v in t.items()}
    rows = []
    for name, label in (("dataset", "for batch in ds"), ("fit-1", "fit stream, 1 replica"),
                        ("fit-2", "fit stream, rank 0 of 2: half of each batch")):
        ratio = rate[name] / rate["loader"]
        rows.append((f"MNIST epoch, batch 32 ({label})", f"{rate[name]:,.0f} b/s",
                     f"{rate['loader']:,.0f} b/s", ratio, ">= 5x", ratio >= 5))
    return rows


def bench_fresh_epoch(pairs: int, quick: bool) -> list[Row]:
    """A whole epoch including the pipeline's set-up, in pairs, the order alternating."""
    x, y = _mnist()
    if quick:
        x, y = x[:6000], y[:6000]

    def dataset() -> int:
        return _drain(iter(Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(32)))

    def loader() -> int:
        return _drain(iter(DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)))

    ratios, same, times = [], [], {"dataset": [], "loader": []}
    for i in range(pairs):
        t = {}
        order = ("dataset", "loader", "loader-2") if i % 2 == 0 else ("loader-2", "loader",
                                                                      "dataset")
        for name in order:
            t[name] = _seconds(dataset if name == "dataset" else loader)
        ratios.append(t["loader"] / t["dataset"])
        same.append(t["loader"] / t["loader-2"])
        times["dataset"].append(t["dataset"])
        times["loader"].append(t["loader"])
    mid = statistics.median
    ratio, aa = mid(ratios), mid(same)
    return [
        (f"MNIST epoch built fresh, shuffle(len(x)).batch(32), {pairs} pairs "
         f"(ratios {min(ratios):.1f}-{max(ratios):.1f})", f"{mid(times['dataset']) * 1e3:.1f} ms",
         f"{mid(times['loader']) * 1e3:.1f} ms", ratio, ">= 8x", ratio >= 8),
        (f"  A/A: DataLoader vs DataLoader, same pairs ({min(same):.2f}-{max(same):.2f})",
         "", "", aa, "~1.00x", 0.8 <= aa <= 1.25),
    ]


def bench_prefetch(repeats: int, quick: bool) -> list[Row]:
    steps = 100 if quick else 400
    x, y = torch.randn(steps * 32, 16), torch.zeros(steps * 32, dtype=torch.int64)

    def slow_map(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        time.sleep(SLEEP_S)  # stands in for decoding/augmenting a batch
        return xb, yb

    def train(batches: Any) -> None:
        for _ in batches:
            time.sleep(SLEEP_S)  # stands in for the model step

    base = Dataset.from_tensor_slices((x, y)).batch(32)
    t = _best({
        "model": lambda: train(range(steps)),
        "serial": lambda: train(base.map(slow_map)),
        "prefetch": lambda: train(base.map(slow_map).prefetch(2)),
        "parallel": lambda: train(base.map(slow_map, num_parallel_calls=2).prefetch(2)),
    }, repeats)
    model = f"{t['model']:.3f} s"
    return [
        (f"{steps} steps, 2 ms map + 2 ms step ({label})", f"{t[k]:.3f} s", model,
         t[k] / t["model"], goal, t[k] / t["model"] <= limit)
        for k, label, goal, limit in (
            ("serial", "no prefetch", "(~2x)", float("inf")),
            ("prefetch", "prefetch(2)", "<= 1.1x", 1.1),
            ("parallel", "map(num_parallel_calls=2).prefetch(2)", "<= 1.1x", 1.1),
        )
    ]


def _slow_source(n: int) -> Iterator[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    for i in range(n):
        time.sleep(0.0005)  # stands in for reading and decoding one file
        yield rng.standard_normal(64).astype(np.float32), i % 10


def bench_cache(quick: bool) -> list[Row]:
    n = 400 if quick else 2000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slow.cache"

        def pipeline(cache_path: Path | None) -> Dataset:
            return Dataset.from_generator(lambda: _slow_source(n)).cache(cache_path).shuffle() \
                .batch(32)

        memory = pipeline(None)
        first = _seconds(lambda: _drain(iter(memory)))
        second = _seconds(lambda: _drain(iter(memory)))
        _drain(iter(pipeline(path)))  # writes the file
        rerun = _seconds(lambda: _drain(iter(pipeline(path))))  # a new run reusing it
    return [
        (f"cache(), {n} samples at 0.5 ms: epoch 2 vs 1", f"{second:.4f} s", f"{first:.3f} s",
         first / second, ">= 10x", first / second >= 10),
        ("cache(path): a second run's first epoch vs 1", f"{rerun:.4f} s", f"{first:.3f} s",
         first / rerun, ">= 10x", first / rerun >= 10),
    ]


def _table(rows: list[Row]) -> str:
    head = ("benchmark", "mirrorfit", "baseline", "ratio", "goal", "ok")
    cells = [head] + [(n, m, b, f"{r:.2f}x", g, "yes" if ok else "NO")
                      for n, m, b, r, g, ok in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per measurement (best kept)")
    parser.add_argument("--pairs", type=int, default=9, help="pairs for the fresh-epoch row")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument("--only-fresh", action="store_true",
                        help="the fresh-epoch row alone, in a process that ran nothing else")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only_fresh:
        print(_table(bench_fresh_epoch(args.pairs, args.quick)))
        return
    rows = bench_mnist(args.repeats, args.quick)
    rows += bench_fresh_epoch(args.pairs, args.quick)
    rows += bench_prefetch(args.repeats, args.quick)
    rows += bench_cache(args.quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.2f} at the end\n")
    print(_table(rows))


if __name__ == "__main__":
    main()
