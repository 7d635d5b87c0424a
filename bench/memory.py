"""Peak memory of fit over in-memory arrays against a hand-written loop.

Each run is its own process (peak RSS is per process, ``resource.getrusage``'s
``ru_maxrss``), started one after the other, the order alternating. Every process
loads MNIST the same way (float32 numpy arrays, scaled in place so the load itself
leaves no transient copy), then trains the same MLP for ``--epochs`` epochs:

- ``hand``: ``torch.from_numpy`` views, ``perm = torch.randperm(n)``, batches by
  ``x[idx]``, Adam; torch only (mirrorfit is not even imported);
- ``fit``: ``mirrorfit.Model(...).fit(x, y, ...)`` on the same numpy arrays, with the
  same ``torch.optim.Adam`` object type and settings;
- ``fit-val``: the same with ``validation_split=0.1`` (the split and each epoch's
  evaluation must not copy the arrays either);
- ``hand`` again in place of ``fit``: the A/A check (two identical processes).

Goal: fit's peak <= 1.05x the hand loop's. The arrays are 188 MB of the peak; a copy
of them (per epoch, per replica, for validation) would show as +50% or more.

Run: ``.venv/bin/python bench/memory.py [--repeats 3] [--epochs 2]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

BATCH = 256


def _load() -> tuple[object, object]:
    import gzip
    from pathlib import Path

    import numpy as np

    import mirrorfit.datasets.mnist as mnist_module

    root = Path(mnist_module.__file__).parent / "_data"
    with gzip.open(root / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32)
    x /= 255.0  # in place: no second 188 MB array
    with gzip.open(root / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _module():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def child(role: str, epochs: int) -> None:
    """One measured process: prints a JSON line with the peak RSS in MB."""
    if role.startswith("fit"):
        import mirrorfit  # imported before the data, as a user script would
    import torch

    torch.set_num_threads(1)
    x, y = _load()
    loaded = _rss_mb()
    m = _module()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    if role.startswith("fit"):
        model = mirrorfit.Model(m)
        model.compile(opt, torch.nn.CrossEntropyLoss())
        split = 0.1 if role == "fit-val" else 0.0
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, seed=0,
                  validation_split=split)
    else:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        loss_fn = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), BATCH):
                idx = perm[i:i + BATCH]
                opt.zero_grad()
                loss_fn(m(xt[idx]), yt[idx]).backward()
                opt.step()
    print(json.dumps({"role": role, "peak_mb": _rss_mb(), "loaded_mb": loaded}))


def _run(role: str, epochs: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", role, "--epochs", str(epochs)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--child", choices=("hand", "fit", "fit-val"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.epochs)
        return
    names = ["hand", "fit", "fit-val", "hand (A/A)"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            runs[name].append(_run(name.split()[0], args.epochs))
            time.sleep(0.2)
    hand = statistics.median(r["peak_mb"] for r in runs["hand"])
    print(f"MNIST (60,000 x 784 float32 = 188 MB), MLP, batch {BATCH}, {args.epochs} epochs, "
          f"{args.repeats} processes each, peak RSS (ru_maxrss)")
    print(f"{'loop':<12}{'peak MB':>10}{'(min-max)':>16}{'after load':>12}{'vs hand':>9}")
    for name, rs in runs.items():
        peaks = [r["peak_mb"] for r in rs]
        print(f"{name:<12}{statistics.median(peaks):>10.1f}"
              f"{f'{min(peaks):.1f}-{max(peaks):.1f}':>16}"
              f"{statistics.median(r['loaded_mb'] for r in rs):>12.1f}"
              f"{statistics.median(peaks) / hand:>8.3f}x")
    print("(goal: fit <= 1.05x the hand loop; 'after load': peak once the arrays are in "
          "memory,\n before any model; mirrorfit's own import is counted in fit's figures)")


if __name__ == "__main__":
    main()
