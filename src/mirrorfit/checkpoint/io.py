"""Reading and writing mirrorfit checkpoint files: torch's own format, with a header.

A checkpoint is a ``torch.save`` of a plain dict of tensors, numbers, strings,
lists and dicts (nothing else, so ``torch.load(weights_only=True)`` reads it and
no pickled code ever runs), with a header::

    {"mirrorfit": {"format_version": 1, "kind": "model" | "weights" | "backup",
                   "mirrorfit_version": "0.1.0", "torch_version": "2.13.0"},
     ...the content of that kind...}

Writes go through :func:`mirrorfit.checkpoint.atomic.atomic_save`. Loads map
tensors to the caller's device (each rank its own; never everyone on GPU 0),
and turn torch's failures into one :class:`CheckpointError` subclass with the
file name and the fix. A failed load never touches the file.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from mirrorfit._version import __version__
from mirrorfit.checkpoint.atomic import atomic_save
from mirrorfit.checkpoint.errors import (
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    UnsafeCheckpointError,
)

#: bump when a reader of the previous layout could misread the new one
FORMAT_VERSION = 1
HEADER = "mirrorfit"
KINDS = ("model", "weights", "backup")

#: what torch's weights-only unpickler says when it refuses to build or call something
#: (torch 2.13: "Unsupported global: GLOBAL x was not an allowed global by default",
#: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked",
#: "Trying to call reduce for unrecognized function f", "Can only build ... but got T")
_REFUSED = (re.compile(r"GLOBAL (\S+)"),
            re.compile(r"unrecognized function (.+?)(?: which belongs to .*)?$"),
            re.compile(r"Can only (?:create new object|build) .* but got (.+)$"))
#: torch's advice to load without the safety net; mirrorfit never repeats it
_ADVICE = re.compile(r"weights_only\W+(?:set to\W+|=\W*)?False", re.IGNORECASE)


def header(kind: str) -> dict[str, Any]:
    """The header stored in every checkpoint of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, received {kind!r}.")
    return {"format_version": FORMAT_VERSION, "kind": kind, "mirrorfit_version": __version__,
            "torch_version": torch.__version__.split("+")[0]}


def save_checkpoint(content: dict[str, Any], path: str | os.PathLike[str], kind: str) -> Path:
    """Write ``content`` with a header of ``kind`` to ``path`` atomically.

    Args:
        content: tensors, numbers, strings, None, and lists/tuples/dicts of them.
        path: the target file.
        kind: 'model', 'weights' or 'backup'.

    Returns:
        The path written.
    """
    return atomic_save({HEADER: header(kind), **content}, path)


def load_checkpoint(path: str | os.PathLike[str], kinds: Collection[str],
                    map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint whose kind is one of ``kinds``, tensors on ``map_location``.

    Returns:
        The dict that was saved, header included.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file holds pickled objects (refused, never run).
        CorruptCheckpointError: a truncated or garbled file, or not a torch file.
        IncompatibleCheckpointError: not a mirrorfit checkpoint, another kind, or a
            newer format version.
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(target)!r}.")
    data = _torch_load(target, map_location)
    check_header(data, target, kinds)
    return data


def _torch_load(target: Path, map_location: str | torch.device | None) -> Any:
    try:
        return torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_message(exc)
        refused = next((m for p in _REFUSED if (m := p.search(detail))), None)
        if refused:
            raise UnsafeCheckpointError(
                f"Refusing to load {str(target)!r}: it holds a pickled Python object "
                f"({refused.group(1).rstrip('.')}), and loading it could run arbitrary code. "
                "mirrorfit loads with torch.load(weights_only=True). Save plain state dicts "
                "(tensors, numbers, strings, lists, dicts) instead, e.g. with model.save(path)."
            ) from None
        raise _corrupt(target, exc, detail) from None
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError) as exc:
        raise _corrupt(target, exc) from None


def _unpickler_message(exc: BaseException) -> str:
    """What torch's weights-only unpickler said, without torch's surrounding advice.

    torch wraps the unpickler's error in "Weights only load failed. ... Re-running
    torch.load with weights_only set to False will likely succeed ..." and a link to
    its docs; the file is refused either way, and mirrorfit never advises turning the
    check off, so only the unpickler's own words are kept (lines that mention
    ``weights_only=False`` are dropped whatever torch's wording).
    """
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed") and "\n\n" in text:
        text = text.split("\n\n", 1)[1]
    text = text.split("Check the documentation of torch.load", 1)[0]
    return " ".join(line.strip() for line in text.splitlines()
                    if line.strip() and not _ADVICE.search(line))


def _corrupt(target: Path, exc: BaseException, detail: str | None = None,
             ) -> CorruptCheckpointError:
    detail = str(exc).strip().split("\n")[0] if detail is None else detail
    if _ADVICE.search(detail):
        detail = "refused by torch.load(weights_only=True)"
    return CorruptCheckpointError(
        f"The checkpoint {str(target)!r} ({target.stat().st_size} bytes) is corrupt or not a "
        f"torch file ({type(exc).__name__}: {detail[:200]}). The file was left as is; restore "
        "it from a copy, or delete it to start from scratch."
    )


def check_header(data: Any, target: Path, kinds: Collection[str]) -> None:
    """Check that ``data`` is a mirrorfit checkpoint of one of ``kinds`` we can read.

    Raises:
        IncompatibleCheckpointError: with what was found and what was expected.
    """
    head = data.get(HEADER) if isinstance(data, dict) else None
    if not isinstance(head, dict):
        raise IncompatibleCheckpointError(
            f"{str(target)!r} is a torch file but not a mirrorfit checkpoint (no "
            f"{HEADER!r} header). A bare state dict loads with "
            "model.module.load_state_dict(torch.load(path, weights_only=True))."
        )
    version = head.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise IncompatibleCheckpointError(
            f"{str(target)!r} has checkpoint format version {version!r} (written by mirrorfit "
            f"{head.get('mirrorfit_version')!r}); this mirrorfit reads versions 1 to "
            f"{FORMAT_VERSION}. Upgrade mirrorfit to read it."
        )
    if head.get("kind") not in kinds:
        raise IncompatibleCheckpointError(
            f"{str(target)!r} is a {head.get('kind')!r} checkpoint; expected one of "
            f"{sorted(kinds)}. Load a backup with BackupAndRestore, a model or weights file with "
            "mirrorfit.load_model / model.load_weights."
        )
