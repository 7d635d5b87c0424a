"""Global RNG states in a form ``torch.load(weights_only=True)`` accepts.

:func:`mirrorfit.seed.rng_state` returns Python's state (a tuple of ints) and
numpy's (a tuple holding an ``ndarray``, which ``weights_only`` refuses). Here
both become tensors and plain numbers, and back.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mirrorfit import seed as seed_mod


def capture() -> dict[str, Any]:
    """This process's global RNG states (Python, numpy, torch, CUDA) as tensors."""
    raw = seed_mod.rng_state()
    version, words, gauss = raw["python"]
    name, keys, pos, has_gauss, cached = raw["numpy"]
    state: dict[str, Any] = {
        "python": {"version": int(version), "words": torch.tensor(words, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": raw["torch"].clone(),
    }
    if "cuda" in raw:
        state["cuda"] = [t.clone() for t in raw["cuda"]]
    return state


def restore(state: dict[str, Any]) -> None:
    """Set the global RNGs from :func:`capture`'s output."""
    py, npy = state["python"], state["numpy"]
    raw: dict[str, Any] = {
        "python": (py["version"], tuple(int(w) for w in py["words"].tolist()), py["gauss"]),
        "numpy": (npy["name"], npy["keys"].cpu().numpy().astype(np.uint32), npy["pos"],
                  npy["has_gauss"], npy["cached"]),
        "torch": state["torch"].cpu(),
    }
    if "cuda" in state:
        raw["cuda"] = [t.cpu() for t in state["cuda"]]
    seed_mod.set_rng_state(raw)
