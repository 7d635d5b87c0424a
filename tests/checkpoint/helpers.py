"""Small models and data for the checkpoint tests (one process, no process group)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

import mirrorfit


def data(n: int = 90, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    return x, (x[:, 0] + x[:, 1] > 0).astype("int64")


def build(d: int = 5, hidden: int = 8, dropout: float = 0.0, optimizer: str = "adam",
          metrics: tuple[str, ...] = ("accuracy",)) -> mirrorfit.Model:
    """A small compiled classifier; the same weights every call."""
    mirrorfit.set_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(),
                                 torch.nn.Dropout(dropout), torch.nn.Linear(hidden, 2),
                                 torch.nn.Softmax(dim=-1))
    model = mirrorfit.Model(module)
    model.compile(optimizer, "sparse_categorical_crossentropy", list(metrics))
    return model


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_weights(a: mirrorfit.Model, b: mirrorfit.Model) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(),
                                                  b.module.state_dict().values(), strict=True))
