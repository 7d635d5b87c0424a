"""Scaling efficiency: 2 CPU workers against 1, one thread each, with Model.fit.

    python bench/scaling.py [--repeats 5] [--models mlp cnn cnn-large]

Each run is a fresh ``MirroredStrategy(devices=n)`` job that trains with the same
**per-replica** batch (the global batch grows with the replicas, as in
``batch_size = 64 * strategy.num_replicas_in_sync``). After a warm-up fit, one
timed fit runs between two barriers. Three kinds of run alternate, so machine
noise hits all of them:

- ``1 worker``: one replica;
- ``2 workers``: two replicas, gradients all-reduced by DDP over gloo;
- ``2 alone``: two independent 1-replica jobs at the same time (no communication,
  started together through a file barrier): what this host gives two processes,
  the ceiling for any data-parallel library here;
- ``2 raw DDP``: a plain torch loop (DDP, gloo) under torchrun, same model, data
  and batches: what torch itself reaches here (``--raw`` to include it).

Placement: mirrorfit binds each of its workers to its own core when the job takes
the whole host (``mirrorfit.cluster.threads``), here 2 one-thread workers on 2
cores. For a like-for-like baseline, the 1-replica jobs are then bound to a core
too (``1 worker`` to core 0, ``2 alone`` to cores 0 and 1): an unbound 1-replica
job ran 20% slower here, which would flatter the efficiency. ``--no-bind`` leaves
every process to the OS. Plain DDP under torchrun is never bound (torchrun's default).

Printed (medians of the repeats): samples/s of each, the scaling efficiency
``2 workers / (2 x 1 worker)``, the host ceiling ``2 alone / (2 x 1 worker)``, and
``2 workers / 2 alone``, the share of the ceiling that mirrorfit reaches, and with
``--raw`` the efficiency of plain DDP.

- mlp: 784-256-256-10 (the seed example), Adam, 64 per replica: little compute
  per step, so the all-reduce and the per-step overhead weigh more;
- cnn: Keras's "simple MNIST convnet" (conv 32, pool, conv 64, pool, dropout,
  1600-10; 34,826 parameters), SGD, 128 per replica: compute-heavy;
- cnn-large: the PyTorch MNIST example CNN (conv 32/64, 9216-128-10;
  1,199,882 parameters), SGD, 128 per replica: compute-heavy, and 4.8 MB of
  gradients to all-reduce per step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {"mlp": {"steps": 300, "batch": 64},
          "cnn": {"steps": 60, "batch": 128},
          "cnn-large": {"steps": 30, "batch": 128}}
KINDS = ("1 worker", "2 workers", "2 alone", "2 raw DDP")


def build(name: str):  # type: ignore[no-untyped-def]
    from torch import nn

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256),
                             nn.ReLU(), nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Dropout(0.5), nn.Linear(1600, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def file_barrier(spec: str) -> None:
    """``dir:count``: mark this process ready, wait until ``count`` are."""
    folder, count = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    while len(os.listdir(folder)) < int(count):
        time.sleep(0.001)


def mnist(n: int):  # type: ignore[no-untyped-def]
    """The first ``n`` MNIST training images (float32, N x 1 x 28 x 28) and labels."""
    import numpy as np

    import mirrorfit

    (x, y), _ = mirrorfit.datasets.mnist.load_data()
    return (x[:n].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[:n].astype(np.int64)


def child(name: str, replicas: int, per_replica: int) -> None:
    """One job: warm up, then time one fit of ``steps`` global steps (chief prints)."""
    import torch

    import mirrorfit

    strategy = mirrorfit.MirroredStrategy(devices=replicas, num_threads=1)
    steps = MODELS[name]["steps"]
    batch = per_replica * strategy.num_replicas_in_sync
    n = steps * batch
    x, y = mnist(n)
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(build(name))
        model.compile("adam" if name == "mlp" else "sgd",
                      mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      ["accuracy"])
    if os.environ.get("BENCH_CORE"):  # a 1-replica job on its own core, as a worker is
        from mirrorfit.cluster.threads import pin_process

        pin_process([int(os.environ["BENCH_CORE"])])
    model.fit(x[:batch * 5], y[:batch * 5], batch_size=batch, verbose=0, seed=0)  # warm-up
    if os.environ.get("BENCH_BARRIER"):
        file_barrier(os.environ["BENCH_BARRIER"])
    strategy.barrier()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, seed=0)
    strategy.barrier()
    seconds = time.perf_counter() - start
    if strategy.is_chief:
        sys.stdout.write("RESULT " + json.dumps({"samples_per_s": n / seconds}) + "\n")


def raw_child(name: str, per_replica: int) -> None:
    """Plain torch under torchrun: DDP over gloo, the same batches as ``child``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    steps, batch = MODELS[name]["steps"], per_replica * world
    x, y = (torch.from_numpy(a) for a in mnist(steps * batch))
    torch.manual_seed(0)
    model = DistributedDataParallel(build(name))
    opt = (torch.optim.Adam(model.parameters(), 1e-3) if name == "mlp"
           else torch.optim.SGD(model.parameters(), 0.01))

    def step(i: int) -> None:
        lo = i * batch + rank * per_replica
        loss = torch.nn.functional.cross_entropy(model(x[lo:lo + per_replica]),
                                                 y[lo:lo + per_replica])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(5):
        step(i)
    dist.barrier()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    dist.barrier()
    if rank == 0:
        sps = steps * batch / (time.perf_counter() - start)
        sys.stdout.write("RESULT " + json.dumps({"samples_per_s": sps}) + "\n")
    dist.destroy_process_group()


def bound() -> bool:
    """Whether mirrorfit binds 2 one-thread workers to cores here (a 2-core host)."""
    from mirrorfit.cluster.threads import cpu_slice

    return (os.environ.get("MIRRORFIT_CPU_BIND", "1") != "0"
            and cpu_slice(sorted(os.sched_getaffinity(0)), 0, 2, 1) is not None)


def start(name: str, replicas: int, per_replica: int, barrier: str = "",
          core: int = 0) -> subprocess.Popen:
    """A mirrorfit job. Bound (unless ``MIRRORFIT_CPU_BIND=0``): mirrorfit binds each of
    its 2 workers to a core; a 1-replica job is bound here, to ``core``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIRRORFIT_NUM_THREADS": "1",
           "BENCH_BARRIER": barrier}
    if replicas == 1 and bound():
        env["BENCH_CORE"] = str(core)
    return subprocess.Popen([sys.executable, __file__, "--child", name, str(replicas),
                             str(per_replica)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> float:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"a benchmark job failed:\n{err[-3000:]}")
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return float(json.loads(line[7:])["samples_per_s"])


def measure(kind: str, name: str, per_replica: int) -> float:
    """Samples/s of one run of ``kind`` (both jobs together for "2 alone")."""
    if kind == "2 raw DDP":
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return result(subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
             "2", __file__, "--raw", name, str(per_replica)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env))
    if kind != "2 alone":
        return result(start(name, 1 if kind == "1 worker" else 2, per_replica, core=0))
    with tempfile.TemporaryDirectory() as folder:
        procs = [start(name, 1, per_replica, f"{folder}:2", core=i) for i in range(2)]
        return sum(result(p) for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=None,
                        help="per-replica batch for every model (default: mlp 64, cnns 128)")
    parser.add_argument("--raw", action="store_true", help="also time plain torch DDP")
    parser.add_argument("--no-bind", action="store_true",
                        help="leave every process's placement to the OS (MIRRORFIT_CPU_BIND=0)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if args.raw and len(rest) == 2:  # a worker started by torchrun
        raw_child(rest[0], int(rest[1]))
        return
    if args.no_bind:
        os.environ["MIRRORFIT_CPU_BIND"] = "0"
    kinds = KINDS if args.raw else KINDS[:3]
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        batch = args.batch or MODELS[name]["batch"]
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        for r in range(args.repeats):
            j = r % len(kinds)
            for kind in kinds[j:] + kinds[:j]:  # rotate the order
                rates[kind].append(measure(kind, name, batch))
        one, two, alone = (statistics.median(rates[k]) for k in KINDS[:3])
        raw = statistics.median(rates[KINDS[3]]) if args.raw else float("nan")
        rounds = [t / (2 * o) for o, t in zip(rates[KINDS[0]], rates[KINDS[1]], strict=True)]
        rows.append((name, batch, one, two, alone, raw, rounds))
    load_after = os.getloadavg()
    print(f"\nModel.fit, 1 thread per worker, medians of {args.repeats} rotating runs; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores); processes bound to cores: {'yes' if bound() else 'no'}")
    print(f"{'model':<10}{'batch/replica':>14}{'1 worker':>10}{'2 workers':>11}{'2 alone':>9}"
          f"{'efficiency':>12}{'host ceiling':>14}{'of ceiling':>12}{'raw DDP eff':>13}")
    for name, batch, one, two, alone, raw, _ in rows:
        print(f"{name:<10}{batch:>14}{one:>10.0f}{two:>11.0f}{alone:>9.0f}"
              f"{two / (2 * one):>12.2f}{alone / (2 * one):>14.2f}{two / alone:>12.2f}"
              f"{raw / (2 * one):>13.2f}")
    print("(samples/s; efficiency = 2 workers / (2 x 1 worker); host ceiling = 2 alone / "
          "(2 x 1 worker); of ceiling = 2 workers / 2 alone)")
    for name, *_, rounds in rows:  # a slowed vCPU shows as one low round
        print(f"{name}: efficiency of each round (its 2-worker run against its 1-worker run): "
              + " ".join(f"{e:.2f}" for e in rounds))


if __name__ == "__main__":
    main()
