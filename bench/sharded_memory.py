"""Memory per worker of MirroredStrategy (DDP) against ShardedStrategy (FSDP2).

One job per (strategy, workers), one after the other, each started the way a user
starts it (``python script.py`` with ``devices=N``: the strategy launches N CPU
workers). Every worker trains the same ~50 M-parameter MLP with Adam through
``fit`` for 2 epochs of ``STEPS`` steps at global batch ``BATCH`` and reports:

- the bytes this rank holds of the parameters, their gradients and Adam's state,
  read from the tensors themselves (DTensors: their local shard) in an optimizer
  step-pre hook, where all three exist;
- its peak RSS (``ru_maxrss``: torch, the gathered parameters of a unit while it
  runs, activations and communication buffers included);
- the second epoch's time per step (the first one warms up).

Goal (issue 14): sharded state <= mirrored / N + 10%. The step-time ratio is the
price of gathering parameters for every forward and backward pass; on a CPU host
the workers share the cores, so it says little about GPUs.

Run: ``.venv/bin/python bench/sharded_memory.py [--workers 2 4] [--steps 4]``
(``--widths 64 256 10`` for a quick check of the script itself).
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys

BATCH = 64
WIDTHS = (1024, 4096, 4096, 4096, 2048, 2048, 10)  # 50.4 M parameters
MB = 2**20


def _local_bytes(t: object) -> int:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.to_local()
    return int(t.numel() * t.element_size())  # type: ignore[attr-defined]


def child(kind: str, workers: int, steps: int, widths: tuple[int, ...]) -> None:
    """One job: every worker prints a JSON line with its figures."""
    import numpy as np
    import torch
    from epoch_time import EpochTime
    from torch import nn

    import mirrorfit

    strategy = (mirrorfit.ShardedStrategy if kind == "sharded" else mirrorfit.MirroredStrategy)(
        devices=workers)
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    with strategy.scope():
        model = mirrorfit.Model(nn.Sequential(*layers[:-1]))
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    setup = model.training_context.setup
    seen: dict[str, int] = {}

    def measure(optimizer: torch.optim.Optimizer, *_: object) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        seen["params"] = sum(_local_bytes(p) for p in params)
        seen["grads"] = sum(_local_bytes(p.grad) for p in params if p.grad is not None)
        seen["adam"] = sum(_local_bytes(v) for s in optimizer.state.values()
                           for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0)

    setup.optimizer.register_step_pre_hook(measure)

    timer = EpochTime()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * steps, widths[0])).astype("float32")
    y = rng.integers(0, widths[-1], size=BATCH * steps).astype("int64")
    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, seed=0, callbacks=[timer])
    total = sum(p.numel() for p in model.module.parameters())
    line = {"kind": kind, "workers": workers, "rank": strategy.rank, "total_params": total,
            **seen, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "step_s": timer.times[-1] / steps}
    sys.stdout.write("JSON " + json.dumps(line) + "\n")
    sys.stdout.flush()


def _job(kind: str, workers: int, steps: int,
         widths: tuple[int, ...]) -> list[dict[str, float]]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--workers", str(workers),
                          "--steps", str(steps), "--widths", *map(str, widths)],
                         check=True, capture_output=True, text=True)
    return [json.loads(line[5:]) for line in out.stdout.splitlines() if line.startswith("JSON ")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=4, help="steps per epoch (2 epochs)")
    parser.add_argument("--widths", type=int, nargs="+", default=list(WIDTHS),
                        help="layer widths (a smaller MLP for a quick check)")
    parser.add_argument("--child", choices=("mirrored", "sharded"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    widths = tuple(args.widths)
    if args.child:
        child(args.child, args.workers[0], args.steps, widths)
        return
    rows = {(k, n): _job(k, n, args.steps, widths)
            for n in args.workers for k in ("mirrored", "sharded")}
    first = next(iter(rows.values()))[0]
    print(f"MLP {'-'.join(map(str, widths))} ({first['total_params'] / 1e6:.1f} M parameters, "
          f"float32), Adam, global batch {BATCH}, CPU workers (gloo); per rank, max over ranks")
    print(f"{'strategy':<10}{'workers':>8}{'params MB':>11}{'grads MB':>10}{'Adam MB':>9}"
          f"{'state MB':>10}{'vs mirrored':>13}{'goal':>7}{'peak RSS MB':>13}{'s/step':>8}"
          f"{'step ratio':>12}")
    for (kind, n), lines in rows.items():
        state = max(r["params"] + r["grads"] + r["adam"] for r in lines)
        base = rows[("mirrored", n)]
        mirrored_state = max(r["params"] + r["grads"] + r["adam"] for r in base)
        step = max(r["step_s"] for r in lines)
        ratio = step / max(r["step_s"] for r in base)
        goal = mirrored_state / n * 1.1
        met = "-" if kind == "mirrored" else ("met" if state <= goal else "MISSED")
        print(f"{kind:<10}{n:>8}{max(r['params'] for r in lines) / MB:>11.1f}"
              f"{max(r['grads'] for r in lines) / MB:>10.1f}"
              f"{max(r['adam'] for r in lines) / MB:>9.1f}{state / MB:>10.1f}"
              f"{state / mirrored_state:>12.3f}x{met:>7}"
              f"{max(r['peak_rss'] for r in lines) / MB:>13.0f}{step:>8.2f}{ratio:>11.2f}x")
    print("(state = params + grads + Adam; goal: sharded state <= mirrored / N + 10%; "
          "step ratio against mirrored at the same N)")


if __name__ == "__main__":
    main()
