"""Shared fixtures: one thread per test process, no leaked distributed variables."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)

_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
              "MIRRORFIT_LAUNCHED", "MIRRORFIT_STORE", "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def _no_leaked_distributed_env():
    before = {k: os.environ.get(k) for k in _DIST_VARS}
    yield
    leaked = {k: os.environ.get(k) for k in _DIST_VARS if os.environ.get(k) != before[k]}
    for k in leaked:
        if before[k] is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = before[k]  # type: ignore[assignment]
    assert not leaked, f"test leaked environment variables: {leaked}"


def pytest_collection_modifyitems(config, items):
    """``requires_gpus(n)``: skip, saying why, where fewer than n CUDA devices exist."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for item in items:
        marker = item.get_closest_marker("requires_gpus")
        if marker is not None:
            need = int(marker.args[0]) if marker.args else 1
            if have < need:
                item.add_marker(pytest.mark.skip(
                    reason=f"needs {need} CUDA device(s); this machine has {have}"))
