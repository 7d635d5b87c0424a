"""Nested structures of tensors (tuples, lists, dicts): flatten, split, stack, concatenate.

An *element* is whatever a pipeline yields at one point: a tensor, a tuple
``(x, y)``, a dict, or tuples/dicts of those. A *batched* element has the same
structure with a leading sample axis on every tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["as_tuple", "collate", "concat", "flatten", "leaves", "tree_map", "unbatch"]

Rebuild = Callable[[Iterator[Any]], Any]


def tree_map(fn: Callable[[torch.Tensor], Any], tree: Any) -> Any:
    """``fn`` applied to every tensor of ``tree``; other leaves are kept as they are."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        return tuple(tree_map(fn, t) for t in tree)
    if isinstance(tree, list):
        return [tree_map(fn, t) for t in tree]
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def leaves(tree: Any, name: str = "x") -> Iterator[tuple[str, Any]]:
    """``(name, leaf)`` pairs in order, names like ``x[0]['image']``."""
    if isinstance(tree, (tuple, list)):
        for i, t in enumerate(tree):
            yield from leaves(t, f"{name}[{i}]")
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from leaves(v, f"{name}[{k!r}]")
    else:
        yield name, tree


def flatten(tree: Any) -> tuple[list[Any], Rebuild]:
    """The leaves of ``tree`` and a function that rebuilds the structure from new leaves.

    The hot path of batching: gather each leaf, then ``rebuild(iter(gathered))``; a flat
    tuple of tensors rebuilds with ``tuple`` itself, at no Python cost per level.
    """
    if isinstance(tree, tuple) and all(isinstance(t, torch.Tensor) for t in tree):
        return list(tree), tuple  # only at the top: ``tuple`` consumes every leaf left
    return _flatten(tree)


def _flatten(tree: Any) -> tuple[list[Any], Rebuild]:
    if isinstance(tree, (tuple, list)):
        parts = [_flatten(t) for t in tree]
        return ([leaf for p in parts for leaf in p[0]],
                lambda it: tuple(rebuild(it) for _, rebuild in parts))
    if isinstance(tree, Mapping):
        keys, parts = list(tree), [_flatten(v) for v in tree.values()]
        return ([leaf for p in parts for leaf in p[0]],
                lambda it: {k: rebuild(it) for k, (_, rebuild) in zip(keys, parts, strict=True)})
    return [tree], next


def unbatch(tree: Any) -> list[Any]:
    """A batched element split into its samples (views, no copies)."""
    if isinstance(tree, torch.Tensor):
        return list(tree.unbind(0))
    if isinstance(tree, (tuple, list)):
        return [tuple(parts) for parts in zip(*(unbatch(t) for t in tree), strict=True)]
    if isinstance(tree, Mapping):
        keys = list(tree)
        return [dict(zip(keys, vals, strict=True))
                for vals in zip(*(unbatch(tree[k]) for k in keys), strict=True)]
    raise TypeError(f"Cannot split a batch of type {type(tree).__name__} into samples.")


def collate(samples: list[Any]) -> Any:
    """Samples stacked into one batched element (tuples stay tuples, unlike default_collate).

    Raises:
        TypeError: an element of a type that cannot be stacked (map it to tensors first).
        RuntimeError: tensors of different shapes (from ``torch.stack``).
    """
    first = samples[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(samples)
    if isinstance(first, np.ndarray):
        stacked = np.stack(samples)
        if stacked.dtype == np.float64:  # Keras habit: float64 numpy becomes float32
            stacked = stacked.astype(np.float32)
        return torch.from_numpy(stacked)
    if isinstance(first, (tuple, list)):
        return tuple(collate(list(col)) for col in zip(*samples, strict=True))
    if isinstance(first, Mapping):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (bool, int, float, np.number)):
        return torch.as_tensor(samples)
    raise TypeError(
        f"Cannot batch elements of type {type(first).__name__}; elements must be tensors, "
        "numpy arrays, numbers, or tuples/dicts of them. Convert them with map() before batch()."
    )


def concat(trees: list[Any]) -> Any:
    """Batched elements of one structure concatenated along the sample axis."""
    first = trees[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(trees)
    if isinstance(first, (tuple, list)):
        return tuple(concat(list(col)) for col in zip(*trees, strict=True))
    if isinstance(first, Mapping):
        return {k: concat([t[k] for t in trees]) for k in first}
    raise TypeError(f"Cannot concatenate batches of type {type(first).__name__}.")


def as_tuple(element: Any) -> tuple[Any, ...]:
    """What the trainer and plain iteration receive: ``(x, y)`` stays, ``x`` becomes ``(x,)``."""
    if isinstance(element, tuple):
        return element
    if isinstance(element, list):
        return tuple(element)
    return (element,)
