"""A pipeline's checkpoint folder: every stage writes its part through DCP.

The folder has ShardedStrategy's layout (``checkpoint.sharded``): the module's
tensors under the whole model's names, the optimizer state keyed by parameter name
with groups that list every parameter (``strategies.pipeline_state``), plus the
stage count in the rest file. So the folder reads whole on one device
(``mirrorfit.load_model``), and a pipeline of another stage count refuses it before
anything is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from mirrorfit.checkpoint import sharded as sharded_io
from mirrorfit.checkpoint.errors import IncompatibleCheckpointError
from mirrorfit.checkpoint.io import load_checkpoint
from mirrorfit.strategies import pipeline_state as states
from mirrorfit.strategies.sharded import _check_shapes  # the same check as sharded folders


def save(state: dict[str, Any], path: str | os.PathLike[str], kind: str, stages: int,
         group_names: Sequence[Sequence[str]]) -> None:
    """Collective: write this stage's part of ``state`` into the folder at ``path``."""
    sharded, rest = sharded_io.split(state)
    sharded = dict(sharded)
    if "module" in sharded:
        sharded["module"] = states.real_only(sharded["module"])
    if "optimizer" in sharded:
        sharded["optimizer"] = states.with_all_names(sharded["optimizer"], group_names)
    rest["pipeline"] = {"stages": stages}
    sharded_io.save(sharded_io.join(sharded, rest), path, kind)


def load(template: dict[str, Any], path: str | os.PathLike[str], kinds: Collection[str],
         device: torch.device, stages: int, group_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Collective: ``template`` (this stage's state; the other stages' tensors meta)
    filled from its part of the folder at ``path``.

    Raises:
        IncompatibleCheckpointError: a checkpoint of another stage count, or not a pipeline's.
        MismatchedCheckpointError: another architecture (nothing is loaded).
    """
    check_stage_count(path, kinds, stages)
    sharded, rest = sharded_io.split(template)
    module = sharded.get("module", {})
    mine = dict(sharded)
    mine["module"] = states.real_only(module)
    if "optimizer" in mine:
        mine["optimizer"] = states.with_all_names(mine["optimizer"], group_names)
    source = repr(str(path))
    loaded = sharded_io.load(sharded_io.join(mine, rest), path, kinds, device,
                             lambda saved: _check_shapes(module, saved, source))
    got, rest = sharded_io.split(loaded)
    got["module"] = {**module, **got.get("module", {})}
    if "optimizer" in got:
        owned = frozenset(k for k, v in module.items() if not v.is_meta)
        got["optimizer"] = states.owned_only(got["optimizer"], owned, group_names)
    return sharded_io.join(got, rest)


def check_stage_count(path: str | os.PathLike[str], kinds: Collection[str], stages: int) -> None:
    """Raise unless the folder at ``path`` was written by a pipeline of ``stages`` stages.

    Raises:
        IncompatibleCheckpointError: another stage count, or not a pipeline's folder.
    """
    folder = Path(path)
    if not sharded_io.is_sharded(folder):
        return  # sharded_io.load says what is wrong
    rest = load_checkpoint(folder / sharded_io.REST_FILE, kinds, map_location="cpu")
    saved = rest.get("pipeline", {}).get("stages")
    written = f"a PipelineStrategy with {saved} stages" if saved else "another strategy"
    if saved != stages:
        raise IncompatibleCheckpointError(
            f"{str(folder)!r} was written by {written}; this PipelineStrategy has "
            f"stages={stages}. Resume with the stage count it was saved with (a "
            "consolidated model.save file loads anywhere).")
