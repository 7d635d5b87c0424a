"""Logits given to a cross-entropy that takes probabilities: one warning on fit's first
batch naming from_logits=True, none for a correct model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit import losses


def _fit(module: nn.Module, loss, y: np.ndarray, epochs: int = 2) -> list[str]:
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model = mirrorfit.Model(module)
    model.compile("adam", loss, ["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return [str(w.message) for w in caught if "from_logits" in str(w.message)]


LABELS = np.arange(64) % 3
ONE_HOT = np.eye(3, dtype="float32")[LABELS]
BINARY = (np.arange(64) % 2).astype("float32").reshape(-1, 1)


@pytest.mark.parametrize(("loss", "y", "out"), [
    ("sparse_categorical_crossentropy", LABELS, 3),
    ("categorical_crossentropy", ONE_HOT, 3),
    ("binary_crossentropy", BINARY, 1),
])
def test_logits_to_a_probability_loss_warn_once(loss: str, y: np.ndarray, out: int) -> None:
    messages = _fit(nn.Linear(4, out), loss, y)
    assert len(messages) == 1, messages  # once, not per step or per epoch
    assert "outside [0, 1]" in messages[0] and "from_logits=True" in messages[0]


def test_rows_that_do_not_sum_to_one_warn() -> None:
    messages = _fit(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()), "categorical_crossentropy",
                    ONE_HOT)
    assert len(messages) == 1 and "not 1" in messages[0]


@pytest.mark.parametrize(("module", "loss", "y"), [
    (nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1)), "sparse_categorical_crossentropy", LABELS),
    (nn.Sequential(nn.Linear(4, 3), nn.Softmax(-1)), "categorical_crossentropy", ONE_HOT),
    (nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), "binary_crossentropy", BINARY),
    (nn.Linear(4, 3), losses.SparseCategoricalCrossentropy(from_logits=True), LABELS),
    (nn.Linear(4, 1), losses.BinaryCrossentropy(from_logits=True), BINARY),
])
def test_no_warning_for_a_correct_model(module: nn.Module, loss, y: np.ndarray) -> None:
    assert _fit(module, loss, y) == []
