"""PipelineStrategy throughput: 2 stages on 2 CPU workers against one process.

One job per configuration, each started as a user starts it (``python script.py``;
the strategy launches its workers). Every job trains the same MLP of ``LAYERS``
Linear layers with SGD through ``fit`` for 2 epochs of ``--steps`` steps at global
batch ``--batch``, one thread per process, and reports the second epoch's samples/s.

Both stages take equal time: the first layer's input needs no gradient, so its
backward is one matrix product where the others' is two. The first layer therefore
reads ``1.5 * width`` features: stage 1 does 2.5 + 3.5 width-squared products per
sample (forward + backward), stage 2 does 2 + 4, the same total. Micro-batches are
large enough (4096 / 8 = 512 rows) that a chunk's products run at the speed of the
whole batch's; at smaller chunks the per-chunk cost of a gloo send and receive
(about 1 ms) and the less efficient weight-gradient product weigh (``--batch 64``
shows it).

With ``p`` stages and ``m`` micro-batches a pipeline keeps its stages busy for ``m``
of every ``m + p - 1`` slots (GPipe's bubble), so at best it runs ``p * m / (m + p - 1)``
times as fast as one process with the whole model on one core. The table prints the
measured speed-up, that ideal, and their ratio. Goal (issue 14): within 15% of the
ideal at ``m = 8``. The last column is mirrorfit's speed over torch's own schedule
driven by hand (``PipelineStage`` + ``ScheduleGPipe``/``Schedule1F1B``, the same
stages, data, loss and SGD, no ``fit``): what mirrorfit itself costs.

Run on a quiet host with at least 2 free cores: ``.venv/bin/python bench/pipeline.py
[--microbatches 1 2 4 8] [--steps 8] [--width 1024]`` (``--width 64 --steps 2`` checks
the script itself; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

BATCH = 4096  # the default of --batch
LAYERS = 4  # square Linear layers: 2 per stage


def _model(width: int) -> Any:
    """The benchmark's MLP, an ``nn.Sequential`` (seeded: every job builds the same)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(width * 3 // 2, width), nn.ReLU()]
    for _ in range(LAYERS - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def _data(batch: int, steps: int, width: int) -> tuple[Any, Any]:
    """The inputs and targets of one epoch (numpy, float32), the same in every job."""
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch * steps, width * 3 // 2)).astype("float32"),
            rng.normal(size=(batch * steps, width)).astype("float32"))


def _report(rank: int, samples_s: float) -> None:
    """One worker's JSON line, which ``_job`` reads."""
    sys.stdout.write("JSON " + json.dumps({"rank": rank, "samples_s": samples_s}) + "\n")
    sys.stdout.flush()


def child(kind: str, microbatches: int, steps: int, width: int, schedule: str,
          batch: int) -> None:
    """One job: every worker prints a JSON line with the second epoch's time."""
    import torch
    from epoch_time import EpochTime

    import mirrorfit

    if kind == "pipeline":
        strategy: mirrorfit.Strategy = mirrorfit.PipelineStrategy(
            stages=2, microbatches=microbatches, schedule=schedule, num_threads=1)
    else:
        torch.set_num_threads(1)
        strategy = mirrorfit.OneDeviceStrategy("cpu")
    with strategy.scope():
        model = mirrorfit.Model(_model(width))
        model.compile("sgd", "mse")
    timer = EpochTime()
    x, y = _data(batch, steps, width)
    model.fit(x, y, batch_size=batch, epochs=2, verbose=0, seed=0, callbacks=[timer])
    _report(strategy.rank, batch * steps / timer.times[-1])


def torch_child(rank: int, port: int, microbatches: int, steps: int, width: int,
                schedule: str, batch: int) -> None:
    """One stage of the same model and data under torch's schedule, driven by hand."""
    import os

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    # the cut fit's balanced split makes: the first Linear, ReLU, Linear, ReLU | the rest
    part = _model(width)[:4] if rank == 0 else _model(width)[4:]
    stage = PipelineStage(part, rank, 2, torch.device("cpu"))
    kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    pipe = kind(stage, microbatches, loss_fn=nn.functional.mse_loss)
    opt = torch.optim.SGD(part.parameters(), lr=0.01)
    x, y = (torch.from_numpy(a) for a in _data(batch, steps, width))
    for _ in range(2):  # the second epoch is timed, as fit's
        start = time.perf_counter()
        for _ in range(steps):
            rows = torch.randperm(batch * steps)[:batch]
            opt.zero_grad()
            if rank == 0:
                pipe.step(x[rows])
            else:
                pipe.step(target=y[rows])
            opt.step()
        seconds = time.perf_counter() - start
    _report(rank, batch * steps / seconds)
    dist.destroy_process_group()


def spawn_torch(microbatches: int, steps: int, width: int, schedule: str, batch: int) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(torch_child, args=(port, microbatches, steps, width, schedule, batch), nprocs=2)


def _job(kind: str, microbatches: int, steps: int, width: int, schedule: str,
         batch: int) -> float:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--microbatches",
                          str(microbatches), "--steps", str(steps), "--width", str(width),
                          "--schedule", schedule, "--batch", str(batch)],
                         check=True, capture_output=True, text=True)
    rates = [json.loads(line[5:])["samples_s"] for line in out.stdout.splitlines()
             if line.startswith("JSON ")]
    return min(rates)  # the slowest rank sets the pace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--microbatches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=8, help="steps per epoch (2 epochs)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=BATCH, help="global batch")
    parser.add_argument("--schedule", default="gpipe", choices=("gpipe", "1f1b"))
    parser.add_argument("--child", choices=("one", "pipeline", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "torch":
        spawn_torch(args.microbatches[0], args.steps, args.width, args.schedule, args.batch)
        return
    if args.child:
        child(args.child, args.microbatches[0], args.steps, args.width, args.schedule,
              args.batch)
        return
    first = _job("one", 1, args.steps, args.width, args.schedule, args.batch)
    rows = []
    for m in args.microbatches:
        if args.schedule == "1f1b" and m < 2:
            continue  # 1F1B needs microbatches >= stages
        rows.append((m, _job("pipeline", m, args.steps, args.width, args.schedule, args.batch),
                     _job("torch", m, args.steps, args.width, args.schedule, args.batch)))
    last = _job("one", 1, args.steps, args.width, args.schedule, args.batch)
    one = (first + last) / 2  # the one-process baseline, before and after the pipelines
    print(f"MLP of {LAYERS} Linear layers of width {args.width}, SGD, global batch "
          f"{args.batch}, one thread per process; 2 stages ({args.schedule}) on 2 CPU workers "
          "(gloo)")
    print(f"{'run':<14}{'samples/s':>11}{'speed-up':>10}{'ideal':>8}{'vs ideal':>10}{'goal':>7}"
          f"{'vs torch':>10}")
    print(f"{'one process':<14}{one:>11.0f}{1.0:>9.2f}x   (first {first:.0f}, last {last:.0f}: "
          f"A/A {last / first:.3f})")
    for m, rate, alone in rows:
        ideal = 2 * m / (m + 1)
        ratio = rate / one / ideal
        goal = ("met" if ratio >= 0.85 else "MISSED") if m == 8 else "-"
        print(f"{f'm = {m}':<14}{rate:>11.0f}{rate / one:>9.2f}x{ideal:>7.2f}x"
              f"{ratio:>9.2f}x{goal:>7}{rate / alone:>9.2f}x")
    print("(ideal: p * m / (m + p - 1) with p = 2 stages; goal: within 15% of it at m = 8;\n"
          " vs torch: mirrorfit's fit over torch's schedule driven by hand, same stages)")


if __name__ == "__main__":
    main()
