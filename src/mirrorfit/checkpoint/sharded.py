"""Sharded checkpoints: a folder written by every rank through
``torch.distributed.checkpoint`` (DCP), replaced atomically.

Layout of a checkpoint at ``path`` (e.g. ``backup_dir/backup.pt``)::

    path -> .NAME.data-TOKEN/        a symbolic link, replaced in one rename
    .NAME.data-TOKEN/
        .metadata, __R_0.distcp    DCP: the module's and optimizer's shards
        mirrorfit.pt               the rest (trainer position, callbacks, RNG states,
                                   loss scale), a mirrorfit checkpoint file

Every rank writes its shards into a fresh ``.NAME.tmp-…`` folder; once DCP has
finished (its metadata is written after every rank's data), the chief renames the
folder to ``.NAME.data-TOKEN``, points a new link at it and renames the link over
``path`` (``os.replace`` of a link is atomic on POSIX), then deletes the previous
data folder. A kill at any moment leaves ``path`` pointing at a complete
checkpoint; :func:`mirrorfit.checkpoint.atomic.remove_stale_temps` clears what a
killed writer left. DCP reshards on load: a checkpoint written by 2 ranks loads on
1 (no process group) or 4.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mirrorfit.checkpoint.atomic import DATA_MARK, fsync_dir, linked_folder, make_parent, temp_path
from mirrorfit.checkpoint.errors import IncompatibleCheckpointError
from mirrorfit.checkpoint.io import load_checkpoint, save_checkpoint

REST_FILE = "mirrorfit.pt"
SHARDED_KEYS = ("module", "optimizer")


def split(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the module's and optimizer's state, everything else) of a backup or model state.

    A backup keeps them under ``state["model"]``; a model file at the top level.
    """
    inner = state.get("model") if isinstance(state.get("model"), dict) else None
    holder = inner if inner is not None else state
    sharded = {k: holder[k] for k in SHARDED_KEYS if holder.get(k) is not None}
    rest_holder = {k: v for k, v in holder.items() if k not in sharded}
    rest = {**state, "model": rest_holder} if inner is not None else rest_holder
    return sharded, rest


def join(sharded: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split`."""
    if isinstance(rest.get("model"), dict):
        return {**rest, "model": {**rest["model"], **sharded}}
    return {**rest, **sharded}


def save(state: dict[str, Any], path: str | os.PathLike[str], kind: str) -> None:
    """Collective over every rank (or none without a process group): write ``state``
    as a sharded checkpoint folder at ``path``, atomically (see the module docstring)."""
    target = Path(path)
    chief = not dist.is_initialized() or dist.get_rank() == 0
    tmp: Path | None = None
    if chief:
        make_parent(target)
        tmp = temp_path(target)
    tmp = Path(_from_chief(str(tmp) if tmp else None))
    sharded, rest = split(state)
    with _one_process_quiet():
        _dcp().save(sharded, checkpoint_id=tmp)  # ends with a gather: every rank's data is on disk
    if chief:
        try:
            save_checkpoint(rest, tmp / REST_FILE, kind)
            _publish(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if dist.is_initialized():
        dist.barrier()  # nobody reads the new checkpoint before it is in place


def _publish(folder: Path, target: Path) -> None:
    """Point ``target`` at the complete ``folder`` in one rename; drop the old data."""
    token = uuid.uuid4().hex[:12]
    data = target.with_name(f".{target.name}{DATA_MARK}{token}")
    os.replace(folder, data)
    previous = linked_folder(target)
    if target.is_dir() and not target.is_symlink():  # a plain folder from elsewhere: set aside
        previous = target.with_name(f".{target.name}{DATA_MARK}{uuid.uuid4().hex[:12]}")
        os.replace(target, previous)
    link = temp_path(target)
    os.symlink(data.name, link)  # relative: the folder may be moved or mounted elsewhere
    os.replace(link, target)
    fsync_dir(target.parent)
    if previous is not None and previous != data:
        shutil.rmtree(previous, ignore_errors=True)


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a sharded checkpoint folder (or a link to one)."""
    return (Path(path) / ".metadata").is_file()


def load(template: dict[str, Any], path: str | os.PathLike[str], kinds: Collection[str],
         device: torch.device, check: Any) -> dict[str, Any]:
    """Collective: ``template`` (this model's own state, sharded as it is now) filled
    from the checkpoint folder at ``path``; DCP reshards to the current ranks.

    Args:
        check: ``check(shapes)`` raises when the saved module's names and shapes (a dict
            of meta tensors) do not fit this model; called before anything is loaded.

    Raises:
        FileNotFoundError, IncompatibleCheckpointError, MismatchedCheckpointError.
    """
    folder = Path(path)
    if not is_sharded(folder):
        if folder.is_file():
            raise IncompatibleCheckpointError(
                f"{str(folder)!r} is a one-file checkpoint (written by a strategy that "
                "replicates the state); ShardedStrategy reads and writes checkpoint folders. "
                "Resume it with the strategy that wrote it, or move it away to start afresh.")
        raise FileNotFoundError(f"No sharded checkpoint folder at {str(folder)!r}.")
    rest = load_checkpoint(folder / REST_FILE, kinds, map_location=device)
    check(saved_shapes(folder, "module"))
    sharded, _ = split(template)
    with _one_process_quiet():
        _dcp().load(sharded, checkpoint_id=folder)  # in place, resharded
    return join(sharded, rest)


def read_whole(path: str | os.PathLike[str], kinds: Collection[str],
               device: torch.device) -> dict[str, Any]:
    """Every tensor of the checkpoint folder at ``path`` whole, read by this process
    alone (not collective; a process group may be up or not): how a sharded 'model'
    checkpoint loads on one device (``mirrorfit.load_model``, ``load_weights``).

    Raises:
        FileNotFoundError, IncompatibleCheckpointError: as :func:`load`.
    """
    folder = Path(path)
    if not is_sharded(folder):
        raise FileNotFoundError(f"No sharded checkpoint folder at {str(folder)!r}.")
    rest = load_checkpoint(folder / REST_FILE, kinds, map_location=device)
    whole: dict[str, Any] = {}
    # what the public torch.distributed.checkpoint.format_utils.dcp_to_torch_save does,
    # without its intermediate file: rebuild the state from the metadata, no_dist=True
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    _load_state_dict(whole, storage_reader=_dcp().FileSystemReader(str(folder)),
                     planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return join(_to_device(whole, device), rest)


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value


def saved_shapes(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors saved under ``prefix`` as meta tensors of their global shapes."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = _dcp().FileSystemReader(str(folder)).read_metadata()
    head = prefix + "."
    return {k[len(head):]: torch.empty(tuple(v.size), dtype=v.properties.dtype, device="meta")
            for k, v in metadata.state_dict_metadata.items()
            if k.startswith(head) and isinstance(v, TensorStorageMetadata)}


@contextlib.contextmanager
def _one_process_quiet() -> Iterator[None]:
    """Without a process group (one replica) DCP warns, on every save and load, that it
    assumes one process: that is the intent here, so the warning is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled, unavailable")
        yield


def _from_chief(value: str | None) -> str:
    if not dist.is_initialized():
        assert value is not None
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    assert box[0] is not None
    return str(box[0])


def _dcp() -> Any:
    """``torch.distributed.checkpoint``, imported on first use: it pulls in DTensor
    (about 0.6 s), which every worker would otherwise pay at ``import mirrorfit``."""
    import torch.distributed.checkpoint as dcp

    return dcp
