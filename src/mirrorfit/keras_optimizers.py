"""Keras-style optimizer classes: ``mirrorfit.optimizers.Adam(learning_rate=1e-3)``.

Each class is a ``torch.optim`` optimizer (``Adam`` is a ``torch.optim.Adam``) that
also takes Keras's arguments:

- ``learning_rate`` (or Keras 2's ``lr``), first positional argument as in Keras;
- Keras's other names (``beta_1``, ``beta_2``, ``epsilon``, ``rho``, ...), with
  Keras's defaults, as :func:`mirrorfit.optimizers.get` translates them;
- ``decay``: Keras 2's inverse-time decay, ``lr_t = lr / (1 + decay * iterations)``
  where ``iterations`` counts the optimizer steps taken before this one. The count
  lives in ``state_dict()["iterations"]``, so a resumed run continues the schedule
  exactly. The factor is applied around each step, on top of the groups' ``lr``,
  which stays what you (or a callback) set;
- ``clipnorm``, ``clipvalue``, ``global_clipnorm``: stored as attributes (``None``
  when unset). The optimizer does not clip: ``model.compile`` reads them into the
  strategy's :class:`~mirrorfit.strategies.setup.Clipping`, and the strategy clips
  the global (all-reduced) gradient before each step, once.

The strategy may point the optimizer at other parameter objects
(:func:`mirrorfit.optimizers.rebind`, in place): the decay's step count and hooks
belong to the optimizer object, so they stay.

Built without parameters (the Keras way), the optimizer is bound to the model's
parameters by ``model.compile(optimizer=opt, ...)``; built with them (the torch way,
``Adam(module.parameters(), learning_rate=...)``) it is ready at once.

Example:
    >>> import torch
    >>> from mirrorfit.optimizers import RMSprop
    >>> opt = RMSprop(learning_rate=1e-4, decay=1e-6)      # Keras 2's rmsprop(lr=1e-4, decay=1e-6)
    >>> opt.bind(torch.nn.Linear(2, 1).parameters())        # what compile() does
    >>> isinstance(opt, torch.optim.RMSprop), opt.learning_rate, opt.iterations
    (True, 0.0001, 0)
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch.optim import Optimizer

from mirrorfit import optimizer_registry
from mirrorfit.strategies.setup import Clipping

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "KerasOptimizer", "Nadam",
           "RMSprop"]


def _non_negative(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{name} must be a non-negative number or None; received {value!r}.")
    return float(value)


class KerasOptimizer(Optimizer):
    """Base of the Keras-style classes; see the module docstring.

    Args:
        params: the parameters (torch style), a learning rate (Keras style, as
            ``Adam(1e-3)``), or None to bind at ``compile``.
        learning_rate: the base learning rate (Keras's default when None).
        lr: Keras 2's name for ``learning_rate``.
        decay: inverse-time decay per step (Keras 2), >= 0.
        clipnorm: clip each gradient tensor to this norm (read by the training step).
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: clip all gradients together to this global norm.
        **kwargs: other settings in Keras's or torch's names (``beta_1``, ``epsilon``,
            ``momentum``, ``weight_decay``, ``foreach``, ...).

    Raises:
        ValueError: both ``learning_rate`` and ``lr``, both ``clipnorm`` and
            ``global_clipnorm``, a negative rate or decay, or a clipping value that is not
            positive.
    """

    _name = ""  # the key in mirrorfit.optimizers' registry

    def __init__(self, params: Any = None, learning_rate: float | None = None, *,
                 lr: float | None = None, decay: float = 0.0, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 **kwargs: Any) -> None:
        if isinstance(params, numbers.Real) and not isinstance(params, bool):
            params, learning_rate = None, _pick_lr(float(params), learning_rate)
        rate = _pick_lr(learning_rate, lr)
        self.decay = _non_negative("decay", decay) or 0.0
        # checked as compile checks them (the strategy clips with these values)
        clipping = Clipping(clipnorm, clipvalue, global_clipnorm)
        self.clipnorm = clipping.clipnorm
        self.clipvalue = clipping.clipvalue
        self.global_clipnorm = clipping.global_clipnorm
        kwargs.pop("name", None)  # Keras's optimizer name: nothing to do with it here
        settings = {k: v for k, v in kwargs.items() if v is not None}
        if rate is not None:
            settings["learning_rate"] = _non_negative("learning_rate", rate)
        self._keras_settings = settings
        self.iterations = 0
        self._bound = False
        if params is not None:
            self.bind(params)

    # --- binding --------------------------------------------------------------------------
    def bind(self, params: Any) -> None:
        """Build the torch optimizer on ``params`` (``compile`` calls this).

        Raises:
            RuntimeError: the optimizer is already bound (to another model's parameters).
        """
        if self._bound:
            raise RuntimeError(
                f"This {type(self).__name__} already optimizes a model's parameters; create a "
                f"new one for each model (e.g. compile(optimizer={type(self).__name__}(...))).")

        listed = optimizer_registry.listed(params)
        settings = optimizer_registry.keras_settings(self._name, listed, self._keras_settings)
        self._torch_init(listed, settings)
        self._bound = True
        self.register_step_pre_hook(_decay_lr)
        self.register_step_post_hook(_count_step)
        self.register_state_dict_post_hook(_save_iterations)
        self.register_load_state_dict_pre_hook(_load_iterations)

    def _torch_init(self, params: list[Any], settings: dict[str, Any]) -> None:
        torch_cls = next(c for c in type(self).__mro__[1:]
                         if issubclass(c, Optimizer) and not issubclass(c, KerasOptimizer))
        try:
            torch_cls.__init__(self, params, **settings)
        except TypeError as err:
            raise TypeError(f"{type(self).__name__} does not take the settings "
                            f"{sorted(self._keras_settings)}: {err}") from err

    def get_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (Keras's ``get_config``), without params."""
        clipping = {k: getattr(self, k) for k in ("clipnorm", "clipvalue", "global_clipnorm")
                    if getattr(self, k) is not None}
        return {**self._keras_settings, "decay": self.decay, **clipping}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KerasOptimizer:
        """An unbound optimizer built from :meth:`get_config`'s output."""
        return cls(**config)

    @property
    def bound(self) -> bool:
        """Whether the optimizer has parameters (after ``compile`` or ``bind``)."""
        return self._bound

    @property
    def learning_rate(self) -> float:
        """The first group's base learning rate (before ``decay``); settable."""
        if not self._bound:
            return float(self._keras_settings.get("learning_rate", float("nan")))
        return float(self.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if not self._bound:
            self._keras_settings["learning_rate"] = float(value)
            return
        for group in self.param_groups:
            group["lr"] = float(value)

    def __repr__(self) -> str:
        extras = {k: getattr(self, k) for k in ("decay", "clipnorm", "clipvalue",
                                                 "global_clipnorm") if getattr(self, k)}
        settings = {**self._keras_settings, **extras}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"

    def __getattr__(self, name: str) -> Any:
        # torch's methods read param_groups, state, hooks: unbound, say what to do
        if (name in ("param_groups", "state", "defaults") or name.startswith("_optimizer")
                or name.startswith("_zero_grad")) and not self.__dict__.get("_bound", True):
            raise RuntimeError(
                f"This {type(self).__name__} has no parameters yet: pass it to "
                f"model.compile(optimizer=...) or call .bind(module.parameters()).")
        raise AttributeError(name)


def _pick_lr(learning_rate: float | None, lr: float | None) -> float | None:
    if learning_rate is not None and lr is not None:
        raise ValueError(f"Pass learning_rate or lr (Keras 2's name), not both; received "
                         f"learning_rate={learning_rate!r}, lr={lr!r}.")
    return learning_rate if learning_rate is not None else lr


def _decay_lr(opt: Optimizer, args: Any, kwargs: Any) -> None:
    assert isinstance(opt, KerasOptimizer)
    if opt.decay:
        factor = 1.0 / (1.0 + opt.decay * opt.iterations)
        opt.__dict__["_base_lrs"] = [g["lr"] for g in opt.param_groups]
        for group in opt.param_groups:
            group["lr"] = group["lr"] * factor


def _count_step(opt: Optimizer, args: Any, kwargs: Any) -> None:
    assert isinstance(opt, KerasOptimizer)
    base = opt.__dict__.pop("_base_lrs", None)
    if base is not None:
        for group, lr in zip(opt.param_groups, base, strict=True):
            group["lr"] = lr
    opt.iterations += 1


def _save_iterations(opt: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(opt, KerasOptimizer)
    state["iterations"] = opt.iterations
    return state


def _load_iterations(opt: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(opt, KerasOptimizer)
    opt.iterations = int(state.pop("iterations", 0))
    return state


class Adam(KerasOptimizer, torch.optim.Adam):
    """Keras's ``Adam`` as a ``torch.optim.Adam`` (defaults: learning_rate=0.001,
    beta_1=0.9, beta_2=0.999, epsilon=1e-7).

    Example:
        >>> import torch
        >>> opt = Adam(torch.nn.Linear(2, 1).parameters(), learning_rate=3e-4, clipnorm=1.0)
        >>> opt.defaults["lr"], opt.clipnorm
        (0.0003, 1.0)
    """

    _name = "adam"


class AdamW(KerasOptimizer, torch.optim.AdamW):
    """Keras's ``AdamW`` (weight_decay=0.004 by default, decoupled as in Keras)."""

    _name = "adamw"


class SGD(KerasOptimizer, torch.optim.SGD):
    """Keras's ``SGD`` (learning_rate=0.01, momentum=0.0, nesterov=False)."""

    _name = "sgd"


class RMSprop(KerasOptimizer, torch.optim.RMSprop):
    """Keras's ``RMSprop`` (learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7).

    Example:
        >>> opt = RMSprop(learning_rate=1e-4, decay=1e-6)   # bound later by compile()
        >>> opt.decay, opt.bound
        (1e-06, False)
    """

    _name = "rmsprop"


class Adagrad(KerasOptimizer, torch.optim.Adagrad):
    """Keras's ``Adagrad`` (learning_rate=0.001, initial_accumulator_value=0.1)."""

    _name = "adagrad"


class Adadelta(KerasOptimizer, torch.optim.Adadelta):
    """Keras's ``Adadelta`` (learning_rate=0.001, rho=0.95, epsilon=1e-7)."""

    _name = "adadelta"


class Adamax(KerasOptimizer, torch.optim.Adamax):
    """Keras's ``Adamax`` (learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)."""

    _name = "adamax"


class Nadam(KerasOptimizer, torch.optim.NAdam):
    """Keras's ``Nadam`` (learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7)."""

    _name = "nadam"
