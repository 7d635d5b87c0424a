"""Keras's optimizer names: the torch class, Keras's defaults in torch's keyword names,
the translation of Keras's keyword names, and the faster kernel each takes (see
:mod:`mirrorfit.optimizers`, which builds optimizers by name, and
:mod:`mirrorfit.keras_optimizers`, whose classes build themselves from the same table).

Example:
    >>> keras_settings("rmsprop", [], {"learning_rate": 1e-4, "rho": 0.8})["alpha"]
    0.8
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["REGISTRY", "keras_settings", "listed"]

_BETAS = (0.9, 0.999)

# name -> (torch class, Keras defaults in torch's keyword names)
REGISTRY: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "adam": (torch.optim.Adam, {"lr": 1e-3, "betas": _BETAS, "eps": 1e-7}),
    "adamw": (torch.optim.AdamW, {"lr": 1e-3, "betas": _BETAS, "eps": 1e-7,
                                  "weight_decay": 0.004}),
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.0, "nesterov": False}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7, "momentum": 0.0,
                                      "centered": False}),
    "adagrad": (torch.optim.Adagrad, {"lr": 1e-3, "initial_accumulator_value": 0.1,
                                      "eps": 1e-7}),
    "adadelta": (torch.optim.Adadelta, {"lr": 1e-3, "rho": 0.95, "eps": 1e-7}),
    "nadam": (torch.optim.NAdam, {"lr": 1e-3, "betas": _BETAS, "eps": 1e-7}),
    "adamax": (torch.optim.Adamax, {"lr": 1e-3, "betas": _BETAS, "eps": 1e-7}),
}

_RENAMES = {"learning_rate": "lr", "epsilon": "eps"}

# name -> the faster kernel option it takes (mirrorfit.optimizers' docstring); adagrad keeps
# torch's default
_FAST = {"adam": "fused", "adamw": "fused", "sgd": "foreach", "rmsprop": "foreach",
         "adadelta": "foreach", "nadam": "foreach", "adamax": "foreach"}
_FUSED_DEVICES = ("cpu", "cuda")


def _torch_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Translate Keras keyword names into torch's for optimizer ``name``."""
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "rho" and name == "rmsprop":
            key = "alpha"
        key = _RENAMES.get(key, key)
        if key in out:
            raise ValueError(f"Optimizer {name!r} received the same setting twice as "
                             f"{sorted(k for k in kwargs if _RENAMES.get(k, k) == key)}; "
                             f"pass only one of them.")
        out[key] = value
    beta_1, beta_2 = out.pop("beta_1", None), out.pop("beta_2", None)
    if beta_1 is not None or beta_2 is not None:
        default_1, default_2 = out.get("betas", _BETAS)
        out["betas"] = (default_1 if beta_1 is None else beta_1,
                        default_2 if beta_2 is None else beta_2)
    return out


def listed(params: Iterable[Any]) -> list[Any]:
    """``params`` as a list (groups' ``params`` too): it is read twice, once to choose
    the kernel, once by the optimizer."""
    return [{**p, "params": list(p["params"])} if isinstance(p, dict) else p
            for p in params]


def _fast_kernel(name: str, params: list[Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``{"fused": True}``, ``{"foreach": True}`` or ``{}`` for optimizer ``name``."""
    fast = _FAST.get(name)
    if fast is None or "foreach" in settings or "fused" in settings:
        return {}
    if fast == "foreach":
        return {"foreach": True}
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    if all(isinstance(t, torch.Tensor) and t.is_floating_point() and not t.is_sparse
           and t.device.type in _FUSED_DEVICES for t in tensors):
        return {"fused": True}
    return {"foreach": True}


def keras_settings(name: str, params: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """torch keyword arguments for registry name ``name``: Keras's defaults, ``kwargs``
    translated from Keras's names, and the faster kernel (module docstring)."""
    settings = {**REGISTRY[name][1], **_torch_kwargs(name, kwargs)}
    return {**_fast_kernel(name, params, settings), **settings}
