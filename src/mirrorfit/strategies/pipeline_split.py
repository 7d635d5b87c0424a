"""Where a model is cut into pipeline stages (pure logic, no process group).

An ``nn.Sequential`` is cut between its children: either into stages of about equal
parameter count, or just before the children named by ``split_points``. Each stage
is an ``nn.Sequential`` of the *same* child modules under their own names, so a
stage's ``state_dict`` keys are the whole model's (``"2.weight"`` stays
``"2.weight"``), which is what lets checkpoints and ``get_weights`` be assembled
from the stages by name.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

#: what ``split_points=`` accepts: names of children of the Sequential
SplitPoints = Sequence[str] | None


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
            raise ValueError(f"split_points must be module paths (non-empty str), the children "
                             f"before which a new stage starts; received {item!r}. Example: "
                             "split_points=['3'] or ['decoder'].")
    return items


def stage_bounds(module: nn.Module, stages: int,
                 split_points: tuple[str, ...] | None) -> list[tuple[int, int]]:
    """``[(first child, end)]`` of each stage.

    Args:
        module: the model; it must be an ``nn.Sequential``.
        stages: how many stages.
        split_points: names of the children that start stages 2, 3, ...; None cuts at
            the most even parameter counts.

    Raises:
        TypeError: ``module`` is not an ``nn.Sequential``.
        ValueError: more stages than children, split points that are not children (or
            not in order, or not ``stages - 1`` of them).
    """
    if not isinstance(module, nn.Sequential):
        hint = (" The split points name module paths, but cutting any other module needs "
                "its forward traced, which mirrorfit does not do." if split_points else "")
        raise TypeError(
            f"PipelineStrategy splits an nn.Sequential between its children; received a "
            f"{type(module).__name__}.{hint} Write the model as nn.Sequential(block1, block2, "
            "...) (each block any module taking the previous block's output).")
    names = [name for name, _ in module.named_children()]
    if stages > len(names):
        raise ValueError(f"PipelineStrategy(stages={stages}) needs at least {stages} children "
                         f"in the nn.Sequential; it has {len(names)} ({names}). Use fewer "
                         "stages or split the model into more blocks.")
    if split_points is None:
        sizes = [sum(p.numel() for p in child.parameters()) for child in module.children()]
        return balanced(sizes, stages)
    return _at_points(names, stages, split_points)


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
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = (0, 0)
    for k in range(1, stages + 1):
        for i in range(k, n - (stages - k) + 1):
            for j in range(k - 1, i):
                before = best[k - 1][j]
                cost = (max(before[0], prefix[i] - prefix[j]),
                        before[1] + (j > 0 and sizes[j] == 0))
                if cost < best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    bounds, end = [], n
    for k in range(stages, 0, -1):
        start = cut[k][end]
        bounds.append((start, end))
        end = start
    return bounds[::-1]


def _at_points(names: list[str], stages: int,
               split_points: tuple[str, ...]) -> list[tuple[int, int]]:
    if len(split_points) != stages - 1:
        raise ValueError(f"PipelineStrategy(stages={stages}) needs {stages - 1} split point(s), "
                         f"the children that start stages 2..{stages}; received "
                         f"split_points={list(split_points)}.")
    starts = []
    for point in split_points:
        if point not in names:
            raise ValueError(f"split point {point!r} is not a child of the nn.Sequential; its "
                             f"children are {names}. (Only the Sequential's own children can "
                             "start a stage.)")
        starts.append(names.index(point))
    if starts != sorted(set(starts)) or starts[0] == 0:
        raise ValueError(f"split_points={list(split_points)} must name distinct children in "
                         f"order, after the first ({names[0]!r}), which starts stage 1.")
    edges = [0, *starts, len(names)]
    return list(itertools.pairwise(edges))


def stage_module(module: nn.Sequential, bounds: tuple[int, int]) -> nn.Sequential:
    """The children ``bounds`` of ``module`` as a Sequential keeping their names (the
    same module objects: nothing is copied)."""
    children = list(module.named_children())[bounds[0]:bounds[1]]
    return nn.Sequential(OrderedDict(children))
