"""What FSDP2's ``fully_shard`` cannot shard, found before anything is sharded.

``ShardedStrategy`` calls :func:`check_shardable` at ``compile`` on every worker,
with the units it is about to shard (``wrap=``), so each of these is one clear
error per worker instead of torch's (measured on torch 2.13, 2 gloo workers):

- a module already wrapped by ``FullyShardedDataParallel`` (FSDP1): sharding it
  again trained to wrong weights at the root without an error, and failed with
  "Cannot concatenate overlapping meshes" below it; one already passed to
  ``fully_shard``: an ``AssertionError`` half-way through sharding;
- an uninitialized lazy module (``nn.LazyLinear`` before its first forward): "Can't
  access the shape of an uninitialized parameter", which points at ``load_state_dict``;
- a 0-d parameter: torch's ``ValueError`` names only the attribute, after the
  units before it were sharded;
- a parameter shared by two units (tied weights wrapped apart): a ``ValueError`` at
  the first forward pass, suggesting ``fully_shard([a, b])``, which ``wrap=`` has no
  way to say;
- trainable parameters of different dtypes in one unit: an ``AssertionError`` at the
  first forward pass;
- a sparse ``nn.Embedding``/``nn.EmbeddingBag``: ``NotImplementedError`` for
  ``fsdp::chunk_cat`` on ``SparseCPU`` at the first backward pass.

Pure logic: no process group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch import nn
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
from torch.nn.parameter import is_lazy

__all__ = ["check_shardable"]


def check_shardable(root: nn.Module, units: Sequence[nn.Module]) -> None:
    """Raise if ``fully_shard`` of each of ``units``, then of ``root``, would fail or
    train wrong weights.

    Args:
        root: the model.
        units: the submodules sharded as their own units before ``root``.

    Raises:
        TypeError: a module already wrapped by FSDP (FSDP1 or ``fully_shard``).
        ValueError: an uninitialized lazy module, a 0-d parameter, a sparse embedding,
            a parameter shared by two units, or trainable parameters of several dtypes
            in one unit. Each names the module path and the fix.
    """
    modules = dict(root.named_modules(remove_duplicate=False))
    _check_not_wrapped(modules)
    _check_tensors(root)
    _check_sparse(modules)
    owners = _owners(root, units)
    _check_tied(owners, modules)
    _check_dtypes(owners)


def _where(path: str) -> str:
    return f"{path!r}" if path else "the model"


def _check_not_wrapped(modules: dict[str, nn.Module]) -> None:
    for path, module in modules.items():
        if isinstance(module, (FullyShardedDataParallel, FSDPModule)):
            kind = ("FullyShardedDataParallel (FSDP1)"
                    if isinstance(module, FullyShardedDataParallel) else "fully_shard")
            raise TypeError(
                f"{_where(path).capitalize()} ({type(module).__name__}) is already wrapped by "
                f"{kind}; ShardedStrategy shards the plain module itself with FSDP2's "
                "fully_shard. Pass the module unwrapped (choose the units with wrap=[...]).")


def _check_tensors(root: nn.Module) -> None:
    for name, tensor in [*root.named_parameters(), *root.named_buffers()]:
        if is_lazy(tensor):
            owner = name.rpartition(".")[0]
            kind = type(root.get_submodule(owner)).__name__
            raise ValueError(
                f"{name!r} ({kind} at {_where(owner)}) is not initialized yet (a lazy module "
                "before its first forward pass), so it cannot be sharded. Run one forward "
                "pass with a sample batch before compile (model.module(x[:1])), which fixes "
                "its shape.")
        if isinstance(tensor, nn.Parameter) and tensor.dim() == 0:
            raise ValueError(
                f"Parameter {name!r} is 0-d (a scalar); FSDP2 shards parameters along their "
                "first dimension, so it cannot shard it. Make it 1-d "
                "(nn.Parameter(torch.tensor([value]))), or use MirroredStrategy.")


def _check_sparse(modules: dict[str, nn.Module]) -> None:
    for path, module in modules.items():
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse:
            raise ValueError(
                f"{_where(path).capitalize()} ({type(module).__name__}) has sparse=True: its "
                "gradients are sparse tensors, which FSDP2 cannot reduce-scatter. Build it "
                "with sparse=False, or use MirroredStrategy.")


class _Owner:
    """The unit that manages a parameter, and where it was seen."""

    def __init__(self, unit: str, name: str, param: nn.Parameter) -> None:
        self.unit, self.name, self.param = unit, name, param


def _owners(root: nn.Module, units: Sequence[nn.Module]) -> dict[int, list[_Owner]]:
    """``id(parameter) -> [owner]`` for every place a parameter is reached from
    ``root``; its unit is the innermost of ``units`` (or the root) that holds the module
    it is an attribute of: the unit whose ``fully_shard`` takes it. A unit reached
    under two paths (a module used twice) is one unit, named by its first path."""
    unit_paths = {id(u): "" for u in units}
    owners: dict[int, list[_Owner]] = {}
    for path, unit, module in _walk(root, "", root, unit_paths):
        for name, param in module._parameters.items():
            if param is not None:
                full = f"{path}.{name}" if path else name
                owners.setdefault(id(param), []).append(
                    _Owner(unit_paths.get(id(unit), ""), full, param))
    return owners


def _walk(module: nn.Module, path: str, unit: nn.Module,
          unit_paths: dict[int, str]) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(module path, its unit, module)``, every module as often as it is reached (a
    module under two parents twice); ``unit_paths`` gets each unit's first path."""
    if path and id(module) in unit_paths:
        unit = module
        unit_paths[id(module)] = unit_paths[id(module)] or path
    yield path, unit, module
    for name, child in module._modules.items():
        if child is not None:
            yield from _walk(child, f"{path}.{name}" if path else name, unit, unit_paths)


def _check_tied(owners: dict[int, list[_Owner]], modules: dict[str, nn.Module]) -> None:
    for places in owners.values():
        units = list(dict.fromkeys(o.unit for o in places))
        if len(units) > 1:
            names = " and ".join(repr(o.name) for o in places[:2])
            shown = ", ".join(_where(u) for u in units)
            common = _common_parent(units, modules)
            fix = (f"wrap=['{common}'] (their common parent)" if common
                   else "wrap=[] (the whole model is one unit)")
            raise ValueError(
                f"{names} are one parameter (tied weights) in different FSDP units ({shown}); "
                "FSDP2 shards each unit's parameters apart, so it cannot shard a parameter "
                f"two units share. Keep the tie inside one unit: leave its modules out of "
                f"wrap= and wrap a module that holds both, e.g. {fix}.")


def _common_parent(paths: list[str], modules: dict[str, nn.Module]) -> str:
    """The innermost module holding all ``paths`` that can be a unit (not a
    ``ModuleList``/``ModuleDict``, which ``wrap=`` replaces by its items); "" for the root."""
    parts = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for names in zip(*parts, strict=False):
        if len(set(names)) != 1:
            break
        common.append(names[0])
    while common and isinstance(modules[".".join(common)], (nn.ModuleList, nn.ModuleDict)):
        common.pop()
    return ".".join(common)


def _check_dtypes(owners: dict[int, list[_Owner]]) -> None:
    by_unit: dict[str, dict[str, str]] = {}  # unit -> dtype -> first parameter
    for places in owners.values():
        first = places[0]
        if first.param.requires_grad:
            by_unit.setdefault(first.unit, {}).setdefault(str(first.param.dtype), first.name)
    for unit, dtypes in by_unit.items():
        if len(dtypes) > 1:
            shown = ", ".join(f"{name!r} {dtype.removeprefix('torch.')}"
                              for dtype, name in dtypes.items())
            raise ValueError(
                f"The FSDP unit {_where(unit)} holds trainable parameters of several dtypes "
                f"({shown}); FSDP2 gathers and reduces a unit's parameters as one dtype. "
                "Convert them to one (e.g. module.float()), or make the modules that hold the "
                "other dtype units of their own with wrap=[...].")
