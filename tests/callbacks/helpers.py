"""Small data, a model and a TensorBoard reader for the callback tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import mirrorfit


def data(n: int = 90, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def build(d: int = 5, lr: float = 0.05) -> mirrorfit.Model:
    """A small compiled classifier; the same weights every call."""
    mirrorfit.set_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model = mirrorfit.Model(module)
    model.compile(torch.optim.Adam(module.parameters(), lr=lr),
                  mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    return model


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a TensorBoard run directory: [(step, value)], as TensorBoard
    itself reads it (all event files of the run, purged steps dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def histogram_steps(run_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Histograms(tag)] for tag in acc.Tags()["histograms"]}


def f32(values: list[float]) -> list[float]:
    """Values as TensorBoard stores them (float32)."""
    return [float(np.float32(v)) for v in values]
