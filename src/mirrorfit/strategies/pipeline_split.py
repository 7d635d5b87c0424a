"""Where a model is cut into pipeline stages (pure logic, no process group).

An ``nn.Sequential`` is cut into *units* that run one after another: its children,
except that an ``nn.Sequential`` child on the path of a split point (``"blocks"`` for
``split_points=["blocks.3"]``, at any depth) is itself replaced by its own children.
The stages are contiguous runs of units: either of about equal parameter count
(the root's children only), or starting at the units named by ``split_points``.

Each stage is an ``nn.Sequential`` holding the *same* unit modules under their own
names, inside new ``nn.Sequential`` containers named as the cut ones, so a stage's
``state_dict`` keys are the whole model's (``"blocks.3.weight"`` stays
``"blocks.3.weight"``), which is what lets checkpoints, ``get_weights`` and the
optimizer's groups be assembled from the stages by name.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

#: what ``split_points=`` accepts: module paths ("3", "decoder", "blocks.3")
SplitPoints = Sequence[str] | None


@dataclass(frozen=True)
class Cut:
    """A model cut into stages: ``units`` (module paths, in the order they run) and
    ``bounds``, the ``[first, end)`` range of units of each stage."""

    units: list[str]
    bounds: list[tuple[int, int]]

    def stage_units(self, index: int) -> list[str]:
        """The paths of stage ``index``'s units."""
        first, end = self.bounds[index]
        return self.units[first:end]


def check_split_points(split_points: SplitPoints) -> tuple[str, ...] | None:
    """``split_points`` as a tuple of names.

    Raises:
        ValueError: something other than a list of module paths (str).
    """
    if split_points is None:
        return None
    items = (split_points,) if isinstance(split_points, str) else tuple(split_points)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ValueError(f"split_points must be module paths (non-empty str), the modules "
                             f"before which a new stage starts; received {item!r}. Example: "
                             "split_points=['3'], ['decoder'] or ['blocks.3'].")
    return items


def cut(module: nn.Module, stages: int, split_points: tuple[str, ...] | None) -> Cut:
    """Where ``module`` is cut into ``stages`` stages.

    Args:
        module: the model; it must be an ``nn.Sequential``.
        stages: how many stages.
        split_points: module paths of the modules that start stages 2, 3, ... (a
            child, or a module inside ``nn.Sequential`` children: ``"blocks.3"``);
            None cuts the root's children at the most even parameter counts.

    Raises:
        TypeError: ``module`` is not an ``nn.Sequential``.
        ValueError: more stages than children; split points that do not exist, go
            through a module that is not an ``nn.Sequential``, are not in order, start
            the model, or are not ``stages - 1`` of them.
    """
    if not isinstance(module, nn.Sequential):
        hint = (" The split points name module paths, but cutting any other module needs "
                "its forward traced, which mirrorfit does not do." if split_points else "")
        raise TypeError(
            f"PipelineStrategy splits an nn.Sequential between its children; received a "
            f"{type(module).__name__}.{hint} Write the model as nn.Sequential(block1, block2, "
            "...) (each block any module taking the previous block's output).")
    if split_points is None:
        names = [name for name, _ in module.named_children()]
        if stages > len(names):
            raise ValueError(f"PipelineStrategy(stages={stages}) needs at least {stages} "
                             f"children in the nn.Sequential; it has {len(names)} ({names}). "
                             "Use fewer stages or split the model into more blocks.")
        sizes = [sum(p.numel() for p in child.parameters()) for child in module.children()]
        return Cut(names, balanced(sizes, stages))
    if len(split_points) != stages - 1:
        raise ValueError(f"PipelineStrategy(stages={stages}) needs {stages - 1} split point(s), "
                         f"the modules that start stages 2..{stages}; received "
                         f"split_points={list(split_points)}.")
    opened = {prefix for point in split_points for prefix in _containers(module, point)}
    units = _units(module, "", opened)
    starts = [_first_unit(units, point) for point in split_points]
    _check_order(units, split_points, starts)
    return Cut(units, list(itertools.pairwise([0, *starts, len(units)])))


def balanced(sizes: Sequence[int], stages: int) -> list[tuple[int, int]]:
    """Cut ``sizes`` (parameters per child) into ``stages`` contiguous non-empty runs
    whose largest total is as small as possible (the slowest stage sets the pace).
    Among those, the fewest stages that start with a child without parameters (an
    activation stays with the layer before it), then the earliest cuts. Exact, by
    dynamic programming: models have tens of children, not thousands."""
    n = len(sizes)
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    worst = (float("inf"), n + 1)
    # best[k][i]: (largest stage, stages starting parameter-free) for i children in k stages
    best = [[worst] * (n + 1) for _ in range(stages + 1)]
    choice = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = (0, 0)
    for k in range(1, stages + 1):
        for i in range(k, n - (stages - k) + 1):
            for j in range(k - 1, i):
                before = best[k - 1][j]
                cost = (max(before[0], prefix[i] - prefix[j]),
                        before[1] + (j > 0 and sizes[j] == 0))
                if cost < best[k][i]:
                    best[k][i], choice[k][i] = cost, j
    bounds, end = [], n
    for k in range(stages, 0, -1):
        start = choice[k][end]
        bounds.append((start, end))
        end = start
    return bounds[::-1]


def _containers(root: nn.Sequential, point: str) -> list[str]:
    """The paths of the ``nn.Sequential`` containers that ``point`` goes through (its
    proper prefixes: ``["blocks"]`` for ``"blocks.3"``), checking that each step exists.

    Raises:
        ValueError: a name that is not a child, or a step through a module that is not
            a plain ``nn.Sequential`` (its forward may do more than run its children).
    """
    parts, prefixes = point.split("."), []
    module: nn.Module = root
    for depth, name in enumerate(parts):
        here = ".".join(parts[:depth])
        if depth and (not isinstance(module, nn.Sequential)
                      or type(module).forward is not nn.Sequential.forward):
            raise ValueError(
                f"split point {point!r} goes through {here!r}, a {type(module).__name__}; only "
                "nn.Sequential containers are cut inside (their children run one after "
                f"another). Split at {here!r} itself, or write it as an nn.Sequential.")
        children = dict(module.named_children())
        if name not in children:
            where = f"{here!r} ({type(module).__name__})" if depth else "the model"
            raise ValueError(f"split point {point!r}: {where} has no child {name!r}; its "
                             f"children are {list(children)}. Name one of them "
                             "(module paths join names with '.', e.g. 'blocks.3').")
        if depth:
            prefixes.append(here)
        module = children[name]
    return prefixes


def _units(container: nn.Module, prefix: str, opened: set[str]) -> list[str]:
    """The paths of the units under ``container``, ``opened`` containers replaced by
    their children, in the order they run."""
    out: list[str] = []
    for name, child in container.named_children():
        path = f"{prefix}{name}"
        out.extend(_units(child, path + ".", opened) if path in opened else [path])
    return out


def _first_unit(units: list[str], point: str) -> int:
    """The index of the first unit at or inside ``point`` (a point naming a cut
    container starts at its first child)."""
    for i, unit in enumerate(units):
        if unit == point or unit.startswith(point + "."):
            return i
    raise ValueError(f"split point {point!r} holds no module to run (an empty nn.Sequential); "
                     "name the module after it.")


def _check_order(units: list[str], points: Sequence[str], starts: list[int]) -> None:
    if starts[0] == 0:
        raise ValueError(f"split point {points[0]!r} is where the model starts (stage 1 begins "
                         f"with {units[0]!r}); name the module that starts stage 2, e.g. "
                         f"{units[1] if len(units) > 1 else units[0]!r}.")
    if starts != sorted(set(starts)):
        order = ", ".join(repr(u) for u in units[:12]) + (" ..." if len(units) > 12 else "")
        raise ValueError(f"split_points={list(points)} must name distinct modules in the "
                         f"order they run, each after the one before; the model runs {order}.")


def stage_module(module: nn.Sequential, units: Sequence[str]) -> nn.Sequential:
    """The ``units`` (consecutive paths of a :class:`Cut`) of ``module`` as an
    ``nn.Sequential`` that keeps their paths: cut containers are rebuilt as new
    ``nn.Sequential`` holding the same module objects (nothing is copied)."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for name, group in itertools.groupby(units, key=lambda path: path.split(".", 1)[0]):
        child = module._modules[name]
        assert child is not None
        inner = [path.split(".", 1)[1] for path in group if "." in path]
        if inner:
            assert isinstance(child, nn.Sequential)  # cut() checked the path
            children[name] = stage_module(child, inner)
        else:
            children[name] = child
    return nn.Sequential(children)
