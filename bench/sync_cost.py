"""What synchronizing every step costs on this host, without mirrorfit: two processes,
one core and one thread each, train the convnet of ``bench/scaling.py`` in plain torch.

    python bench/sync_cost.py [--rounds 12] [--steps 20]

Kinds of segment, timed in lockstep (each round runs ``--steps`` steps of every kind,
in rotating order, between barriers) and printed against ``free``:

- ``free``: each process trains on its own, no communication (the host ceiling);
- ``tick``: the same, plus an all-reduce of one float after each backward: the
  processes wait for each other every step, but exchange no gradients;
- ``ddp``: ``DistributedDataParallel`` over gloo, gradients all-reduced each step.

``tick`` against ``free`` is the price of waiting for the slower process at every step,
which any synchronous data parallelism pays; ``ddp`` against ``tick`` is the gradient
all-reduce itself. Then the latency of gloo's all-reduce alone, by size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import scaling  # bench/scaling.py: the models and the data
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

KINDS = ("free", "tick", "ddp")
SIZES = (1, 2, 4, 1024, 34_826, 1_199_882)  # floats: ... the convnet's, the large CNN's


def worker(rank: int, port: int, rounds: int, steps: int, out: mp.Queue) -> None:
    from mirrorfit.cluster.threads import configure_cpu, pin_process
    from mirrorfit.strategies.process_group import teardown

    pin_process([rank])
    configure_cpu(1)  # one thread, and mirrorfit's malloc settings
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    x, y = (torch.from_numpy(a) for a in scaling.mnist(128 * steps))
    torch.manual_seed(0)
    net = scaling.build("cnn")
    modules = {"free": net, "tick": net, "ddp": torch.nn.parallel.DistributedDataParallel(net)}
    opt = torch.optim.SGD(net.parameters(), 0.01)
    one = torch.zeros(1)

    alone: list[float] = []  # the duration of each step of "free"

    def step(i: int, kind: str) -> None:
        begin = time.perf_counter()
        lo = i * 128
        loss = torch.nn.functional.cross_entropy(modules[kind](x[lo:lo + 128]), y[lo:lo + 128])
        loss.backward()
        if kind == "tick":
            dist.all_reduce(one)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if kind == "free":
            alone.append(time.perf_counter() - begin)

    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds + 1):  # round 0 warms up
        for kind in KINDS[r % 3:] + KINDS[:r % 3]:
            dist.barrier()
            start = time.perf_counter()
            for i in range(steps):
                step(i, kind)
            if r:
                times[kind].append((time.perf_counter() - start) / steps)
    latency = {n: _all_reduce_latency(n) for n in SIZES}
    if rank == 0:
        out.put((times, latency, alone[steps:]))
    modules.clear()  # no DDP wrapper may outlive the group (TORCH-NOTES trap 1)
    teardown()


def _all_reduce_latency(n: int, repeats: int = 100) -> float:
    t = torch.ones(n)
    for _ in range(10):
        dist.all_reduce(t)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(t)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--port", type=int, default=29731)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args.port, args.rounds, args.steps, out))
             for r in range(2)]
    for p in procs:
        p.start()
    times, latency, alone = out.get()
    for p in procs:
        p.join()
    med = statistics.median
    print(f"\nplain torch, 2 processes bound to a core each, convnet, 128 per process, "
          f"medians of {args.rounds} lockstep rounds")
    print(f"{'kind':<6}{'ms/step':>9}{'vs free':>9}")
    for kind in KINDS:
        ratio = med(t / f for t, f in zip(times[kind], times["free"], strict=True))
        print(f"{kind:<6}{med(times[kind]) * 1e3:>9.1f}{ratio:>9.3f}")
    ms = sorted(t * 1e3 for t in alone)
    print(f"one step of free, rank 0: standard deviation {statistics.pstdev(ms):.1f} ms; "
          f"10th/50th/90th percentile {ms[len(ms) // 10]:.1f}/{med(ms):.1f}/"
          f"{ms[len(ms) * 9 // 10]:.1f} ms")
    print("\ngloo all-reduce between the 2 processes, alone")
    print(f"{'floats':>10}{'us':>9}")
    for n, seconds in latency.items():
        print(f"{n:>10}{seconds * 1e6:>9.0f}")


if __name__ == "__main__":
    main()
