"""fit's own cost per step, in microseconds: whole runs of ``fit`` against a hand loop
that gathers its batches the way ``fit`` does, on a model that computes little.

    python bench/fit_cost.py [--rounds 15] [--steps 1500] 2>/dev/null

The model is ``Linear(784, 10)`` on MNIST, batch 32, fused Adam, one thread. The hand
loop gathers 41 batches with one ``index_select`` per tensor and steps through views of
them, as ``fit`` does over in-memory tensors, and keeps a running loss; so the
difference per step is ``fit``'s own Python: its epoch loop, the strategy's
forward/backward and optimizer step, the loss's checks, the running loss, the
callbacks. Each round runs hand, fit, hand, hand, hand and compares ``fit`` with the
mean of the two runs beside it; the A/A row compares the fourth run (the hand loop
again) with its two neighbours the same way. ``bench/peers.py`` shows what such a cost is worth on
the seed MLP (about 1 ms per step there).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from epoch_time import EpochTime  # bench/, the script's folder
from seed_mlp import mnist_flat  # bench/, the script's folder
from torch import nn

import mirrorfit

BATCH, GROUP = 32, 41


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 10))


def hand(x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds for one pass of the hand loop over ``x`` (set-up excluded)."""
    module = build()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3, fused=True)
    order, total = torch.randperm(len(x)), torch.zeros((), dtype=torch.float64)
    start = time.perf_counter()
    for lo in range(0, len(x), GROUP * BATCH):
        idx = order[lo:lo + GROUP * BATCH]
        for xb, yb in zip(x.index_select(0, idx).split(BATCH),
                          y.index_select(0, idx).split(BATCH), strict=True):
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += loss.detach()
    float(total)
    return time.perf_counter() - start


def fit(x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of fit's one epoch over ``x`` (its set-up excluded)."""
    model = mirrorfit.Model(build())
    model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    epoch = EpochTime()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, seed=0, callbacks=[epoch])
    return epoch.times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    mirrorfit.OneDeviceStrategy("cpu")  # mirrorfit's CPU set-up, for both loops
    torch.set_num_threads(1)
    x, y = mnist_flat(args.steps * BATCH)
    hand(x, y), fit(x, y)  # first-call costs of both
    diff, same, base = [], [], []
    for _ in range(args.rounds):
        # hand, fit, hand, hand again, hand: each middle run against the mean of the two
        # beside it, so a drift of the host's speed that is linear over the runs cancels
        h1, f, h2, again, h3 = (fn(x, y) for fn in (hand, fit, hand, hand, hand))
        diff.append((f - (h1 + h2) / 2) / args.steps)
        same.append((again - (h2 + h3) / 2) / args.steps)
        base.append(h2 / args.steps)
    us = [d * 1e6 for d in diff]
    aa = [d * 1e6 for d in same]
    print(f"Linear(784, 10), batch {BATCH}, {args.steps} steps per run, {args.rounds} rounds; "
          f"hand loop {statistics.median(base) * 1e6:.1f} us/step")
    print(f"fit - hand loop (the runs beside it): {statistics.median(us):.1f} us/step "
          f"(rounds {min(us):.1f} to {max(us):.1f})")
    print(f"A/A, hand loop - hand loop:          {statistics.median(aa):.1f} us/step "
          f"(rounds {min(aa):.1f} to {max(aa):.1f})")


if __name__ == "__main__":
    main()
