"""One seed for everything: ``mirrorfit.set_seed(42)`` like ``keras.utils.set_random_seed``."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_data_seed: int | None = None


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch, and fix the order in which fit() shuffles data.

    Call it before building the model so every replica starts from the same
    weights (DDP also broadcasts the chief's weights when training starts).
    """
    global _data_seed
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, received {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    _data_seed = seed


def data_seed() -> int | None:
    """The seed set by :func:`set_seed`, or None."""
    return _data_seed


def rng_state() -> dict[str, Any]:
    """Every global RNG's state (for checkpoints)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
