"""compile's arguments in saved models, Keras style: names as they are, mirrorfit's own
losses, metrics and optimizers as their class name and ``get_config()``, the user's own
callables by name.

A saved model holds no code (it loads with ``torch.load(weights_only=True)``), so a
class is found again by name among mirrorfit's own (``mirrorfit.losses``,
``mirrorfit.metrics``, ``mirrorfit.optimizers``, ``torch.optim``) and nowhere else.
The user's own loss, metric or optimizer factory comes back through
``load_model(path, module=..., custom_objects={"name": obj})``, as in Keras; without
it, loading says which names are missing and both ways to give them.

Example:
    >>> from mirrorfit import losses
    >>> entry = serialize(losses.CategoricalCrossentropy(from_logits=True))
    >>> entry["class_name"], entry["config"]["from_logits"]
    ('CategoricalCrossentropy', True)
    >>> deserialize(entry, "loss", {}, [])
    CategoricalCrossentropy(from_logits=True, label_smoothing=0.0)
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from mirrorfit import losses, metrics, optimizers
from mirrorfit.keras_optimizers import KerasOptimizer
from mirrorfit.torch_losses import CallableLoss

__all__ = ["compile_arguments", "compile_config", "deserialize", "serialize"]

_TORCH = "torch.optim."


def serialize(value: Any) -> Any:
    """A name as is; a mirrorfit or torch.optim object as ``{"class_name", "config"}``; the
    user's own callable as ``{"custom": name}`` (plus its ``get_config()`` if it has one)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (CallableLoss, metrics._FunctionMetric)):
        return _custom(value.fn)
    for module, base in ((losses, losses.Loss), (metrics, metrics.Metric),
                         (optimizers, KerasOptimizer)):
        if isinstance(value, base) and _own(module, type(value)):
            return {"class_name": type(value).__name__, "config": value.get_config()}
    if isinstance(value, torch.optim.Optimizer) and _own(torch.optim, type(value)):
        config = {k: v for k, v in value.defaults.items() if _plain(v)}
        return {"class_name": _TORCH + type(value).__name__, "config": config}
    return _custom(value)


def _own(module: Any, cls: type) -> bool:
    return getattr(module, cls.__name__, None) is cls


def _plain(value: Any) -> bool:
    """What ``torch.load(weights_only=True)`` reads back: numbers, strings, tuples of them."""
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, bool, numbers.Real))


def _custom(obj: Any) -> dict[str, Any]:
    name = getattr(obj, "__name__", None) or type(obj).__name__
    entry: dict[str, Any] = {"custom": name}
    get_config = getattr(obj, "get_config", None)
    if not isinstance(obj, type) and callable(get_config):
        try:
            config = get_config()
        except (TypeError, NotImplementedError):
            config = None
        if isinstance(config, Mapping) and all(_plain(v) for v in config.values()):
            entry["config"] = dict(config)
    return entry


def deserialize(entry: Any, kind: str, custom_objects: Mapping[str, Any],
                missing: list[str]) -> Any:
    """The compile argument ``entry`` describes; a custom name absent from
    ``custom_objects`` is appended to ``missing`` (and None returned).

    Raises:
        ValueError: a class name that is not mirrorfit's or torch.optim's.
    """
    if isinstance(entry, str):
        return entry
    if "custom" in entry:
        name = entry["custom"]
        if name not in custom_objects:
            missing.append(f"{kind} {name!r}")
            return None
        obj = custom_objects[name]
        if isinstance(obj, type) and "config" in entry:
            from_config = getattr(obj, "from_config", None)
            return from_config(entry["config"]) if from_config else obj(**entry["config"])
        return obj
    name, config = entry["class_name"], dict(entry["config"])
    if name.startswith(_TORCH):
        cls = getattr(torch.optim, name[len(_TORCH):], None)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
            return functools.partial(cls, **config)  # compile calls it with the parameters
    for module in (losses, metrics, optimizers):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and hasattr(cls, "from_config") and name in module.__all__:
            return cls.from_config(config)
    raise ValueError(f"The saved {kind} names the class {name!r}, which is not one of "
                     "mirrorfit's; pass compile=False and compile the model yourself.")


def compile_config(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What ``Model.save`` records of compile's arguments (None if never compiled)."""
    if args is None:
        return None
    return {"optimizer": serialize(args["optimizer"]), "loss": serialize(args["loss"]),
            "metrics": [serialize(m) for m in args["metrics"]],
            "weighted_metrics": [serialize(m) for m in args.get("weighted_metrics", [])],
            "steps_per_update": args["steps_per_update"]}


def compile_arguments(config: Mapping[str, Any], custom_objects: Mapping[str, Any] | None,
                      source: str) -> dict[str, Any]:
    """``model.compile``'s keyword arguments from a saved configuration.

    Raises:
        ValueError: the file names the user's own callables and ``custom_objects`` lacks
            some; the message names them and both ways to give them back.
    """
    custom = dict(custom_objects or {})
    missing: list[str] = []
    optimizer = deserialize(config["optimizer"], "optimizer", custom, missing)
    loss = deserialize(config["loss"], "loss", custom, missing)
    metric_list = [deserialize(m, "metric", custom, missing) for m in config["metrics"]]
    weighted = [deserialize(m, "metric", custom, missing)
                for m in config.get("weighted_metrics", [])]  # files before it: none
    if missing:
        names = ", ".join(missing)
        example = ", ".join(f"{n}: {n[1:-1]}" for n in (m.split(" ", 1)[1] for m in missing))
        raise ValueError(
            f"{source} was compiled with your own {names}; saved models hold no code. Pass "
            f"them back with load_model(path, module=..., custom_objects={{{example}}}), or "
            "load with compile=False and call model.compile(...) again.")
    return {"optimizer": optimizer, "loss": loss, "metrics": metric_list,
            "weighted_metrics": weighted, "steps_per_update": config["steps_per_update"]}
