"""Keras optimizer names mapped onto ``torch.optim`` with Keras's defaults.

``get("adam", model.parameters())`` builds ``torch.optim.Adam`` with Keras's
learning rate and epsilon (1e-7, where torch uses 1e-8). Keras keyword names
are translated: ``learning_rate`` -> ``lr``, ``epsilon`` -> ``eps``,
``beta_1``/``beta_2`` -> ``betas``, ``rho`` -> ``alpha`` for RMSprop; torch's
own names (``lr``, ``betas``, ...) pass through unchanged.

Differences from Keras that remain: ``weight_decay`` on ``adam``, ``sgd``,
``rmsprop``, ``adagrad``, ``adadelta`` and ``nadam`` is torch's L2 penalty added
to the gradient, whereas Keras 3 decays weights directly (use ``"adamw"`` for
decoupled decay); epsilon placement and NAdam's momentum schedule follow torch.
Learning-rate schedules are callbacks' business, not an argument here.

Kernels: a named optimizer runs torch's multi-tensor kernels where torch's default
would loop over the parameters in Python. ``adam`` and ``adamw`` use
``fused=True`` when every parameter is a floating-point tensor on the CPU or a
CUDA GPU (on the CPU torch's default is the per-parameter loop: fit's MNIST MLP
step ran 1.4x faster than a hand loop with it, ``bench/fit_overhead.py``); ``sgd``, ``rmsprop``,
``adadelta`` and ``nadam`` use ``foreach=True`` (for the first three the loop's
arithmetic bit for bit). ``adagrad`` keeps torch's default, whose loop takes
sparse gradients. Pass ``foreach=`` or ``fused=`` to choose yourself. Fused
``adam``/``adamw`` and foreach ``nadam`` order their operations differently from
the loop, so results differ by rounding (about 1e-8 per step on float32).

Example:
    >>> import torch
    >>> from mirrorfit import optimizers
    >>> opt = optimizers.get("adam", torch.nn.Linear(2, 1).parameters(), learning_rate=3e-4)
    >>> type(opt).__name__, opt.defaults["lr"], opt.defaults["eps"]
    ('Adam', 0.0003, 1e-07)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from mirrorfit.keras_optimizers import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    KerasOptimizer,
    Nadam,
    RMSprop,
)
from mirrorfit.naming import unknown_name

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Nadam", "Params", "RMSprop",
           "get", "rebind"]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
"""What ``torch.optim`` accepts: tensors, or parameter-group dicts."""

_BETAS = (0.9, 0.999)

# name -> (torch class, Keras defaults in torch's keyword names)
_REGISTRY: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
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

# name -> the faster kernel option it takes (module docstring); adagrad keeps torch's
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


def _build(name: str, cls: Callable[..., Any], params: Params,
           kwargs: dict[str, Any]) -> Optimizer:
    try:
        optimizer = cls(params, **kwargs)
    except TypeError as err:
        raise TypeError(f"Could not build optimizer {name!r} with keyword arguments "
                        f"{sorted(kwargs)}: {err}") from err
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"Optimizer factory {name!r} returned {optimizer!r}; expected a "
                        f"torch.optim.Optimizer.")
    return optimizer


def _listed(params: Params) -> list[Any]:
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
    settings = {**_REGISTRY[name][1], **_torch_kwargs(name, kwargs)}
    return {**_fast_kernel(name, params, settings), **settings}


def get(identifier: str | Optimizer | type[Optimizer] | Callable[..., Optimizer],
        params: Params | None = None, **kwargs: Any) -> Optimizer:
    """Resolve a Keras optimizer name, an optimizer, or a factory into a torch optimizer.

    Args:
        identifier: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``, ``"adagrad"``,
            ``"adadelta"`` or ``"nadam"`` (case-insensitive); a ``torch.optim.Optimizer``
            instance (returned as is); or an optimizer class or factory called as
            ``fn(params, **kwargs)``.
        params: the parameters to optimize (ignored for an instance).
        **kwargs: settings in Keras names (``learning_rate``, ``beta_1``, ``epsilon``,
            ``rho``, ``momentum``, ``nesterov``, ``weight_decay``, ...) or torch names.
            Only ``learning_rate`` is renamed for a class or factory.

    Returns:
        A ``torch.optim.Optimizer``.

    Raises:
        ValueError: an unknown name, or settings passed with an optimizer instance.
        TypeError: a setting the torch optimizer does not take, or a factory that does
            not return an optimizer.
    """
    if isinstance(identifier, KerasOptimizer) and not identifier.bound:
        if params is None:
            raise ValueError(f"{identifier!r} needs params (e.g. model.parameters()).")
        identifier.bind(params)
    if isinstance(identifier, Optimizer):
        if kwargs:
            raise ValueError(f"Settings {sorted(kwargs)} cannot apply to an optimizer that "
                             f"already exists ({type(identifier).__name__}); pass them to "
                             f"its constructor instead.")
        return identifier
    if params is None:
        raise ValueError(f"Optimizer {identifier!r} needs params (e.g. model.parameters()); "
                         f"received params=None.")
    if isinstance(identifier, str):
        name = identifier.lower()
        if name not in _REGISTRY:
            raise ValueError(unknown_name("optimizer", identifier, list(_REGISTRY),
                                          "a torch.optim.Optimizer, a mirrorfit.optimizers "
                                          "class, or an optimizer class or factory fn(params)"))
        params = _listed(params)
        return _build(name, _REGISTRY[name][0], params, keras_settings(name, params, kwargs))
    if callable(identifier):
        renamed = {("lr" if k == "learning_rate" else k): v for k, v in kwargs.items()}
        label = getattr(identifier, "__name__", repr(identifier))
        return _build(label, identifier, params, renamed)
    raise TypeError(f"Could not interpret optimizer identifier: received {identifier!r}; "
                    f"expected a name, a torch.optim.Optimizer or a factory fn(params).")


def rebind(optimizer: Optimizer, before: Mapping[int, str],
           after: Mapping[str, torch.Tensor]) -> Optimizer:
    """Point ``optimizer`` at the parameters a strategy produced, in place.

    A strategy may replace a module's parameter objects (sharding swaps them for
    sharded ones; a pipeline stage keeps only its own). An optimizer built before
    would then update tensors that no longer train. Each parameter is found by its
    name: ``before`` maps ``id(old parameter)`` to its name, ``after`` maps names to
    the parameters now in the module; parameters absent from ``after`` (another
    stage's) leave their group. The optimizer object stays the same, with its
    groups, hyper-parameters and hooks.

    Returns:
        ``optimizer``.

    Raises:
        ValueError: the optimizer holds a tensor that is not a parameter of the module,
            or already has state (rebinding would lose it).
    """
    olds = [p for group in optimizer.param_groups for p in group["params"]]
    if all(after.get(before.get(id(p), "")) is p for p in olds):
        return optimizer  # nothing moved (the common case: .to() keeps parameter objects)
    if optimizer.state:
        raise ValueError(f"The {type(optimizer).__name__} already holds state for the old "
                         "parameters; compile the model before training it by hand, or pass "
                         "an optimizer name.")
    for group in optimizer.param_groups:
        fresh = []
        for p in group["params"]:
            name = before.get(id(p))
            if name is None:
                raise ValueError(f"The {type(optimizer).__name__} passed to compile holds a "
                                 f"tensor of shape {tuple(p.shape)} that is not a parameter of "
                                 "the model; build it from model.module.parameters().")
            if name in after:
                fresh.append(after[name])
        group["params"] = fresh
    return optimizer
