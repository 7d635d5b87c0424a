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
from mirrorfit.optimizer_registry import REGISTRY, keras_settings, listed

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Nadam", "Params", "RMSprop",
           "get", "rebind"]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
"""What ``torch.optim`` accepts: tensors, or parameter-group dicts."""

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
        if name not in REGISTRY:
            raise ValueError(unknown_name("optimizer", identifier, list(REGISTRY),
                                          "a torch.optim.Optimizer, a mirrorfit.optimizers "
                                          "class, or an optimizer class or factory fn(params)"))
        params = listed(params)
        return _build(name, REGISTRY[name][0], params, keras_settings(name, params, kwargs))
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
