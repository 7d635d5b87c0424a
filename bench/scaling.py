"""Scaling efficiency: 2 CPU workers against 1, one thread each, with Model.fit.

    python bench/scaling.py [--repeats 3] [--models mlp cnn]

Each run is a fresh ``MirroredStrategy(devices=n)`` job that trains with the same
**per-replica** batch (the global batch grows with the replicas, as in
``batch_size = 64 * strategy.num_replicas_in_sync``). After a warm-up fit, one
timed fit runs between two barriers; runs alternate 1, 2, 1, 2… so machine
noise hits both. Prints samples/s (median of the repeats) and the scaling
efficiency, samples/s with 2 / (2 × samples/s with 1), and the load average
before and after (other processes on the cores lower the 2-worker figure).

- mlp: 784-256-256-10 (the seed example), Adam, 64 per replica: little compute
  per step, so the all-reduce and the per-step overhead weigh more;
- cnn: the PyTorch MNIST CNN (2 convolutions 32/64, 9216-128-10, no dropout),
  SGD, 128 per replica: compute-heavy (about 0.17 s per step on one core).

The 2 workers need both cores of a 2-core host: any other busy process slows
them far more than the 1-worker run, so the best of the repeats is printed
next to the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {"mlp": {"steps": 300, "batch": 64}, "cnn": {"steps": 20, "batch": 128}}


def build(name: str):  # type: ignore[no-untyped-def]
    from torch import nn

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                             nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def child(name: str, replicas: int, per_replica: int) -> None:
    """One job: warm up, then time one fit of ``steps`` global steps (chief prints)."""
    import numpy as np
    import torch

    import mirrorfit

    strategy = mirrorfit.MirroredStrategy(devices=replicas, num_threads=1)
    steps = MODELS[name]["steps"]
    batch = per_replica * strategy.num_replicas_in_sync
    (x, y), _ = mirrorfit.datasets.mnist.load_data()
    n = steps * batch
    x = (x[:n].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    y = y[:n].astype(np.int64)
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(build(name))
        model.compile("adam" if name == "mlp" else "sgd",
                      mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      ["accuracy"])
    model.fit(x[:batch * 5], y[:batch * 5], batch_size=batch, verbose=0, seed=0)  # warm-up
    strategy.barrier()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, seed=0)
    strategy.barrier()
    seconds = time.perf_counter() - start
    if strategy.is_chief:
        print("RESULT " + json.dumps({"samples_per_s": n / seconds, "seconds": seconds}),
              flush=True)


def measure(name: str, replicas: int, per_replica: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIRRORFIT_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--child", name, str(replicas),
                           str(per_replica)],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} with {replicas} replicas failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return float(json.loads(line[7:])["samples_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=None,
                        help="per-replica batch for every model (default: mlp 64, cnn 128)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        batch = args.batch or MODELS[name]["batch"]
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for replicas in (1, 2):
                rates[replicas].append(measure(name, replicas, batch))
        one, two = statistics.median(rates[1]), statistics.median(rates[2])
        best = max(rates[2]) / (2 * max(rates[1]))
        rows.append((name, batch, one, two, two / (2 * one), best))
    load_after = os.getloadavg()
    print(f"\nModel.fit, 1 thread per worker, median of {args.repeats} alternating runs; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)")
    print(f"{'model':<6}{'batch/replica':>14}{'1 worker sps':>14}{'2 workers sps':>15}"
          f"{'efficiency':>12}{'best-of':>9}")
    for name, batch, one, two, eff, best in rows:
        print(f"{name:<6}{batch:>14}{one:>14.0f}{two:>15.0f}{eff:>12.2f}{best:>9.2f}")


if __name__ == "__main__":
    main()
