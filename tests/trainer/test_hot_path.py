"""What fit does per step beyond the hand loop's work, counted (not timed)."""

from __future__ import annotations

import contextlib
import os
import sys
import types

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


def _mirrorfit_calls_per_step(strategy: mirrorfit.strategies.Strategy | None = None,
                              **compile_args: object) -> float:
    """Python calls into mirrorfit's own functions per training step (the profiler's call
    events, generator resumptions included), from runs of 4 and 8 steps."""
    package = os.path.dirname(mirrorfit.__file__)
    calls = []

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(frame.f_code.co_name)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, 64)
    counts = []
    for steps in (4, 8):
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = mirrorfit.Model(torch.nn.Linear(4, 3))
            model.compile("adam", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                          **compile_args)
        model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)  # first-call work
        calls.clear()
        sys.setprofile(profile)
        try:
            model.fit(x[:steps * 8], y[:steps * 8], batch_size=8, epochs=1, verbose=0)
        finally:
            sys.setprofile(None)
        counts.append(len(calls))
    return (counts[1] - counts[0]) / 4


def test_a_float32_step_without_clipping_runs_in_a_few_of_mirrorfits_calls() -> None:
    # the batch generator, Steps.train, the strategy's one-frame train step, the loss's
    # call and __call__, the module call, the tracker's update and running sum, and the two
    # empty batch hooks; the general step adds the strategy's and the policy's frames
    assert _mirrorfit_calls_per_step() <= 10
    general = _mirrorfit_calls_per_step(clipnorm=1.0)
    assert general >= _mirrorfit_calls_per_step() + 4
