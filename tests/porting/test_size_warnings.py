"""One-line warnings with the numbers: a batch larger than the data, more CPU workers
than cores."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.cluster.launcher import warn_if_oversubscribed


def test_a_batch_larger_than_the_data_warns_with_the_numbers() -> None:
    model = mirrorfit.Model(torch.nn.Linear(4, 1))
    model.compile("sgd", "mse")
    x, y = np.zeros((10, 4), "float32"), np.zeros((10, 1), "float32")
    with pytest.warns(UserWarning, match=r"batch_size=64 is larger than the 10 training") as got:
        model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert got[0].filename == __file__  # the user's line, not mirrorfit's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, y, batch_size=10, epochs=1, verbose=0)


def test_more_cpu_workers_than_cores_warn_with_the_numbers() -> None:
    # launch() calls this before starting workers (a real 3-worker launch costs ~20 s here)
    with pytest.warns(UserWarning, match=r"starting 8 CPU workers on 2 cores") as got:
        warn_if_oversubscribed(8, cores=2)
    assert "devices=2" in str(got[0].message) and "\n" not in str(got[0].message)
    assert got[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_oversubscribed(2, cores=2)
