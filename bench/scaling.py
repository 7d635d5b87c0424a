"""Scaling efficiency: 2 CPU workers against 1, one thread each, with Model.fit.

    python bench/scaling.py [--rounds 12] [--models mlp cnn cnn-large] [--no-bind]

Each model runs as one 2-worker mirrorfit job (``MirroredStrategy(devices=2,
num_threads=1)``), in which every round times one **segment** of each kind of run,
a few seconds apart, in an order that rotates from round to round:

- ``1 worker``: rank 0 fits a 1-replica model (``OneDeviceStrategy``) while rank 1
  waits in a barrier (idle: about 6 ms of CPU per segment);
- ``2 workers``: both ranks fit the 2-replica model (gradients all-reduced by DDP over
  gloo), timed from barrier to barrier, so the end of fit's epoch counts;
- ``2 alone``: both ranks fit their own 1-replica models at the same time, with no
  communication: what this host gives two processes, the ceiling for any
  data-parallel library here;
- ``2 raw DDP``: a plain torch loop (``DistributedDataParallel``, gloo) over the same
  batches in the same two processes: what torch itself reaches here.

Every kind trains with the same **per-replica** batch (the global batch grows with the
replicas, as in ``batch_size = 64 * strategy.num_replicas_in_sync``). Why lockstep:
this VM's speed drifts by 10-30% within seconds, so two whole jobs run one after the
other compare two different machines. Here each round's ratios come from segments
seconds apart, in the same processes, on the same cores, and the figures printed are
medians over the rounds of each round's ratio.

Placement: mirrorfit binds each of its 2 workers to its own core (a job that takes the
whole host, ``mirrorfit.cluster.threads``); the 1-replica runs are then on those cores
too, since they run in the same processes. ``--no-bind`` (``MIRRORFIT_CPU_BIND=0``)
leaves every process to the OS.

Printed: samples/s of each kind (medians), the scaling efficiency ``2 workers /
(2 x 1 worker)``, the host ceiling ``2 alone / (2 x 1 worker)``, ``2 workers / 2
alone`` (the share of the ceiling that mirrorfit reaches), plain DDP's efficiency,
and the efficiency of each round.

- mlp: 784-256-256-10 (the seed example), Adam, 64 per replica: little compute per
  step, so the all-reduce and the per-step overhead weigh more;
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
import time

#: steps per segment (about 0.5-1.5 s each here) and the per-replica batch
MODELS = {"mlp": {"steps": 200, "batch": 64},
          "cnn": {"steps": 20, "batch": 128},
          "cnn-large": {"steps": 8, "batch": 128}}
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


def mnist(n: int):  # type: ignore[no-untyped-def]
    """The first ``n`` MNIST training images (float32, N x 1 x 28 x 28) and labels."""
    import numpy as np

    import mirrorfit

    (x, y), _ = mirrorfit.datasets.mnist.load_data()
    return (x[:n].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[:n].astype(np.int64)


class Lockstep:
    """The runs of one job: a 2-replica model, a 1-replica model and a plain DDP loop."""

    def __init__(self, name: str, per_replica: int, steps: int) -> None:
        import torch

        import mirrorfit

        self.strategy = mirrorfit.MirroredStrategy(devices=2, num_threads=1)
        self.per, self.steps = per_replica, steps
        x, y = mnist(2 * per_replica * steps)
        self.x, self.y = x, y
        self.tx, self.ty = torch.from_numpy(x), torch.from_numpy(y)
        optimizer = "adam" if name == "mlp" else "sgd"
        torch.manual_seed(0)
        with self.strategy.scope():
            self.two = mirrorfit.Model(build(name))
            self.two.compile(optimizer, _loss(), ["accuracy"])
        with mirrorfit.OneDeviceStrategy("cpu").scope():
            self.one = mirrorfit.Model(build(name))
            self.one.compile(optimizer, _loss(), ["accuracy"])
        net = build(name)
        self.raw = torch.nn.parallel.DistributedDataParallel(net)
        self.raw_opt = (torch.optim.Adam(net.parameters(), 1e-3, fused=True) if name == "mlp"
                        else torch.optim.SGD(net.parameters(), 0.01))

    def fit_one(self) -> float:
        """Seconds of a 1-replica fit of ``steps`` batches of the per-replica size."""
        n = self.steps * self.per
        start = time.perf_counter()
        self.one.fit(self.x[:n], self.y[:n], batch_size=self.per, verbose=0, seed=0)
        return time.perf_counter() - start

    def fit_two(self) -> float:
        self.strategy.barrier()
        start = time.perf_counter()
        self.two.fit(self.x, self.y, batch_size=2 * self.per, verbose=0, seed=0)
        self.strategy.barrier()
        return time.perf_counter() - start

    def raw_loop(self) -> float:
        import torch

        rank, per = self.strategy.rank, self.per
        self.strategy.barrier()
        start = time.perf_counter()
        for i in range(self.steps):
            lo = (2 * i + rank) * per
            loss = torch.nn.functional.cross_entropy(self.raw(self.tx[lo:lo + per]),
                                                     self.ty[lo:lo + per])
            loss.backward()
            self.raw_opt.step()
            self.raw_opt.zero_grad(set_to_none=True)
        self.strategy.barrier()
        return time.perf_counter() - start

    def segment(self, kind: str) -> float:
        """Samples/s of one segment of ``kind`` (every rank returns the same)."""
        samples = self.steps * self.per
        if kind == "1 worker":
            self.strategy.barrier()
            seconds = self.fit_one() if self.strategy.is_chief else 0.0
            return samples / self.strategy.broadcast_object(seconds)
        if kind == "2 workers":
            return 2 * samples / self.fit_two()
        if kind == "2 alone":
            self.strategy.barrier()
            seconds = self.fit_one()
            return sum(samples / s for s in self.strategy.all_gather_object(seconds))
        return 2 * samples / self.raw_loop()


def _loss():  # type: ignore[no-untyped-def]
    import mirrorfit

    return mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)


def lockstep_job(name: str, per_replica: int, rounds: int) -> None:
    """Runs in each of the 2 workers; the chief prints every round's samples/s."""
    model = MODELS[name]  # segments of about the same length at any batch
    job = Lockstep(name, per_replica, max(2, model["steps"] * model["batch"] // per_replica))
    for kind in KINDS:  # warm-up
        job.segment(kind)
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        j = r % len(KINDS)
        for kind in KINDS[j:] + KINDS[:j]:
            rates[kind].append(job.segment(kind))
    if job.strategy.is_chief:
        sys.stdout.write("RESULT " + json.dumps(rates) + "\n")


def run_job(name: str, per_replica: int, rounds: int) -> dict[str, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIRRORFIT_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--job", name, str(per_replica),
                           str(rounds)], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the benchmark job for {name} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[7:])  # type: ignore[no-any-return]


def bound() -> bool:
    """Whether mirrorfit binds 2 one-thread workers to cores here (a 2-core host)."""
    from mirrorfit.cluster.threads import cpu_slice

    return (os.environ.get("MIRRORFIT_CPU_BIND", "1") != "0"
            and cpu_slice(sorted(os.sched_getaffinity(0)), 0, 2, 1) is not None)


def _ratios(num: list[float], den: list[float], scale: float = 1.0) -> list[float]:
    """Each round's ``num / (scale x den)``."""
    return [n / (scale * d) for n, d in zip(num, den, strict=True)]


def report(rows: list[tuple[str, int, dict[str, list[float]]]], rounds: int) -> None:
    print(f"\nModel.fit, 1 thread per worker, lockstep: medians of {rounds} rounds "
          f"({os.cpu_count()} cores; workers bound to cores: {'yes' if bound() else 'no'})")
    print(f"{'model':<10}{'batch/replica':>14}{'1 worker':>10}{'2 workers':>11}{'2 alone':>9}"
          f"{'efficiency':>12}{'host ceiling':>14}{'of ceiling':>12}{'raw DDP eff':>13}")
    med = statistics.median
    efficiencies = []
    for name, batch, rates in rows:
        one, two, alone, raw = (rates[k] for k in KINDS)
        efficiencies.append((name, _ratios(two, one, 2)))
        print(f"{name:<10}{batch:>14}{med(one):>10.0f}{med(two):>11.0f}{med(alone):>9.0f}"
              f"{med(efficiencies[-1][1]):>12.2f}{med(_ratios(alone, one, 2)):>14.2f}"
              f"{med(_ratios(two, alone)):>12.2f}{med(_ratios(raw, one, 2)):>13.2f}")
    print("(samples/s; efficiency = 2 workers / (2 x 1 worker), host ceiling = 2 alone / "
          "(2 x 1 worker), of ceiling = 2 workers / 2 alone: each the median of the rounds' "
          "ratios)")
    for name, eff in efficiencies:
        print(f"{name}: efficiency of each round: " + " ".join(f"{e:.2f}" for e in eff))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=None,
                        help="per-replica batch for every model (default: mlp 64, cnns 128)")
    parser.add_argument("--no-bind", action="store_true",
                        help="leave every process's placement to the OS (MIRRORFIT_CPU_BIND=0)")
    parser.add_argument("--job", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        lockstep_job(args.job[0], int(args.job[1]), int(args.job[2]))
        return
    if args.no_bind:
        os.environ["MIRRORFIT_CPU_BIND"] = "0"
    rows = []
    for name in args.models:
        batch = args.batch or MODELS[name]["batch"]
        rows.append((name, batch, run_job(name, batch, args.rounds)))
    report(rows, args.rounds)


if __name__ == "__main__":
    main()
