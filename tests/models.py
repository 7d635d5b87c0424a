"""Small compiled models the one-process tests share."""

from __future__ import annotations

import torch

import mirrorfit


def linear_classifier(features: int = 4, classes: int = 3) -> mirrorfit.Model:
    """``Linear(features, classes)`` from seed 0, compiled with SGD, sparse cross-entropy
    on logits and accuracy."""
    torch.manual_seed(0)
    model = mirrorfit.Model(torch.nn.Linear(features, classes))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model
