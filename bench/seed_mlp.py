"""The seed guides' MNIST MLP and MNIST as flat float tensors, shared by the benchmarks
that time a step of it (their scripts import it from this folder)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import mirrorfit


def seed_mlp(seed: int | None = 0) -> nn.Module:
    """784-256-256-10, ReLU, logits (the Keras guide's model); ``torch.manual_seed(seed)``
    first unless ``seed`` is None."""
    if seed is not None:
        torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def mnist_flat(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's first ``n`` training images (all without ``n``) as ``(n, 784)`` float32 in
    [0, 1], and their labels as int64."""
    (x, y), _ = mirrorfit.datasets.mnist.load_data()
    x, y = x[:n], y[:n]
    return (torch.from_numpy(x.reshape(-1, 784).astype(np.float32) / 255.0),
            torch.from_numpy(y.astype(np.int64)))
