"""Reading and comparing the weight dumps that the strategies' worker jobs write."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def saved_arrays(out: Path, name: str, rank: int = 0) -> list[np.ndarray]:
    """The arrays of ``out/NAME.RANK.npz`` (``np.savez(*arrays)``), in saved order."""
    with np.load(out / f"{name}.{rank}.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def assert_close(a: list[np.ndarray], b: list[np.ndarray], atol: float = 1e-5) -> None:
    """The same number of arrays, each within ``atol``."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)
