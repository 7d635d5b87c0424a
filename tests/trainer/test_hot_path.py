"""What fit does per step beyond the hand loop's work, counted (not timed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit


def _detaches_per_step(monkeypatch: pytest.MonkeyPatch, metrics: list[str]) -> float:
    calls = []
    original = torch.Tensor.detach
    monkeypatch.setattr(torch.Tensor, "detach",
                        lambda self: calls.append(1) or original(self))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(96, 4)).astype("float32"), rng.integers(0, 3, 96)
    counts = []
    for steps in (4, 8):
        model = mirrorfit.Model(torch.nn.Linear(4, 3))
        model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=metrics)
        calls.clear()
        model.fit(x[:steps * 8], y[:steps * 8], batch_size=8, epochs=1, verbose=0)
        counts.append(len(calls))
    return (counts[1] - counts[0]) / 4


def test_fit_without_metrics_detaches_only_the_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    # the output is not read without metrics, so it is not detached (~1% of a small step)
    assert _detaches_per_step(monkeypatch, []) == 1
    assert _detaches_per_step(monkeypatch, ["accuracy"]) == 2
