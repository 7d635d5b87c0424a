"""Keras 3 on the torch backend; every test here skips, saying why, without keras."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras is not installed (pip install -e '.[dev]')")
if keras.backend.backend() != "torch":
    pytest.skip(f"keras runs on the {keras.backend.backend()!r} backend here; these tests need "
                "KERAS_BACKEND=torch", allow_module_level=True)
