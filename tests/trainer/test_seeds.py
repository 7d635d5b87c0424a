"""Seeds the way PyTorch users set them: ``torch.manual_seed`` alone fixes fit's data
order (as it fixes ``DataLoader(shuffle=True)``'s), so two runs end with the same
weights; ``mirrorfit.set_seed`` keeps working. Other replica counts: the contract
job (tests/strategies) seeds only torch and compares 1, 2 and 3 replicas."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

import mirrorfit


def _run(seed_fn) -> list[np.ndarray]:
    seed_fn()
    random.random()  # Python's generator moves between runs: it must not matter
    model = mirrorfit.Model(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1)))
    model.compile("sgd", "mse")
    x = torch.arange(60.0).reshape(12, 5) / 60
    model.fit(x, x.sum(1, keepdim=True), batch_size=4, epochs=2, verbose=0)
    return model.get_weights()


def test_torch_manual_seed_alone_fixes_the_data_order():
    random.seed()  # whatever state Python's generator is in
    first = _run(lambda: torch.manual_seed(0))
    second = _run(lambda: torch.manual_seed(0))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    third = _run(lambda: torch.manual_seed(1))
    assert any(not np.array_equal(a, b) for a, b in zip(first, third, strict=True))


def test_set_seed_still_fixes_everything():
    first = _run(lambda: mirrorfit.set_seed(3))
    second = _run(lambda: mirrorfit.set_seed(3))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
