"""Checkpoint cost for a ~100 MB model: save, restore, and the training stall.

    python bench/checkpoint.py [--mb 100] [--repeats 3] [--steps 24] [--every 6]
                               [--dir DIR] [--device cpu|cuda]

The model is a stack of 2048x2048 Linear layers (``--mb`` of float32 weights),
compiled with Adam, so a full training state (weights + Adam's two moments) is
about 3x that. Measured, best of ``--repeats`` (the machine is shared):

- host copy: snapshot every tensor of the training state into host memory
  (what an asynchronous save blocks for; the goal for the stall);
- save (sync): ``Model.save`` -- torch.save + fsync + atomic rename, weights +
  optimizer state; and a full BackupAndRestore state;
- save (async): how long ``CheckpointWriter.save`` blocks, and until the file is on disk;
- restore: ``load_checkpoint`` (weights_only, map_location) + loading the state;
- fit stall: ``fit`` for ``--steps`` steps with a BackupAndRestore every ``--every``
  steps, sync and async, minus the same fit without it, per checkpoint.

Prints one table; the last line compares the async stall with the host copy.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import mirrorfit
from mirrorfit.callbacks import BackupAndRestore
from mirrorfit.checkpoint import CheckpointWriter, load_checkpoint
from mirrorfit.checkpoint.state import capture_training_state, restore_training_state
from mirrorfit.checkpoint.writer import to_host

WIDTH = 2048


def build(mb: int, device: str) -> mirrorfit.Model:
    layers = max(1, round(mb * 2**20 / (4 * (WIDTH * WIDTH + WIDTH))))
    torch.manual_seed(0)
    module = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    with mirrorfit.OneDeviceStrategy(device).scope():
        model = mirrorfit.Model(module)
        model.compile("adam", "mse")
    return model


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def fit_seconds(model: mirrorfit.Model, steps: int, callbacks: list) -> float:
    x = np.random.default_rng(0).normal(size=(steps * 32, WIDTH)).astype("float32")
    start = time.perf_counter()
    model.fit(x, x, batch_size=32, epochs=1, verbose=0, seed=0, callbacks=callbacks)
    if model.strategy.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(args: argparse.Namespace, folder: Path) -> list[tuple[str, float, str]]:
    model = build(args.mb, args.device)
    fit_seconds(model, 2, [])  # Adam's state exists from here on
    callbacks: list = list(model.training_context.callbacks)
    state = capture_training_state(model.training_context, callbacks)
    assert state is not None
    rows = []
    weights_mb = sum(t.numel() * t.element_size() for t in model.module.state_dict().values())
    rows.append(("host copy of the training state", best(lambda: to_host(state), args.repeats),
                 "snapshot into host memory"))
    rows.append(("save model (sync)", best(lambda: model.save(folder / "m.pt"), args.repeats),
                 f"{(folder / 'm.pt').stat().st_size / 2**20:.0f} MiB file"))
    writer = CheckpointWriter()
    rows.append(("save backup (sync)",
                 best(lambda: writer.save(state, folder / "b.pt", "backup"), args.repeats),
                 f"{(folder / 'b.pt').stat().st_size / 2**20:.0f} MiB file"))
    async_writer = CheckpointWriter(async_save=True)
    blocked, on_disk = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        async_writer.save(state, folder / "a.pt", "backup")
        blocked.append(time.perf_counter() - start)
        async_writer.wait()
        on_disk.append(time.perf_counter() - start)
    rows.append(("save backup (async): blocks for", min(blocked), "then writes in a thread"))
    rows.append(("save backup (async): on disk after", min(on_disk), ""))
    rows.append(("restore model (load + load_weights)",
                 best(lambda: model.load_weights(folder / "m.pt"), args.repeats), ""))

    def restore_backup() -> None:
        data = load_checkpoint(folder / "b.pt", ["backup"], map_location=model.strategy.device)
        restore_training_state(model.training_context, data, callbacks, "bench")

    rows.append(("restore backup (load + full state)", best(restore_backup, args.repeats), ""))
    rows += fit_stalls(model, args, folder)
    rows.insert(0, ("model weights", weights_mb / 2**20, "MiB (x3 with Adam's moments)"))
    return rows


class _TimedBackup(BackupAndRestore):
    """BackupAndRestore that records how long each save blocks the training loop."""

    def __init__(self, backup_dir: Path, save_freq: int, async_save: bool) -> None:
        super().__init__(backup_dir, save_freq=save_freq, async_save=async_save)
        self.stalls: list[float] = []

    def _save(self) -> None:
        start = time.perf_counter()
        super()._save()
        self.stalls.append(time.perf_counter() - start)


def fit_stalls(model: mirrorfit.Model, args: argparse.Namespace,
               folder: Path) -> list[tuple[str, float, str]]:
    """Per checkpoint, the time the loop is blocked inside the save (median over saves,
    best over repeats), and each whole fit's wall time."""
    stalls: dict[str, list[float]] = {"sync": [], "async": []}
    walls: dict[str, list[float]] = {"none": [], "sync": [], "async": []}
    for _ in range(args.repeats):  # interleaved so machine noise hits all three
        for mode in walls:
            cb = _TimedBackup(folder / f"fit-{mode}", save_freq=args.every,
                              async_save=mode == "async")
            walls[mode].append(fit_seconds(model, args.steps, [] if mode == "none" else [cb]))
            if mode != "none":
                stalls[mode].append(float(np.median(cb.stalls)))
    saves = args.steps // args.every
    return [("fit step without checkpoints", min(walls["none"]) / args.steps,
             f"{args.steps} steps"),
            ("fit stall per checkpoint (sync)", min(stalls["sync"]),
             f"{saves} backups per fit; fit {min(walls['sync']):.1f} s vs "
             f"{min(walls['none']):.1f} s without"),
            ("fit stall per checkpoint (async)", min(stalls["async"]),
             f"fit {min(walls['async']):.1f} s (the writer thread shares the CPU)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="float32 weights, MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--every", type=int, default=6)
    parser.add_argument("--dir", default=None, help="where files go (default: a temp dir)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mirrorfit-ckpt-", dir=args.dir))
    try:
        rows = measure(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"device={args.device} threads={torch.get_num_threads()} dir={folder.parent}")
    print(f"{'what':<40} {'value':>10}  note")
    for name, value, note in rows:
        unit = "" if name == "model weights" else " s"
        print(f"{name:<40} {value:>8.3f}{unit:2}  {note}")
    copy = rows[1][1]
    stall = next(v for n, v, _ in rows if n == "fit stall per checkpoint (async)")
    print(f"async fit stall / host copy = {stall / copy:.2f} (goal: <= 1)")


if __name__ == "__main__":
    main()
