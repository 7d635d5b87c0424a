"""Datasets in LeCun's idx format (MNIST, Fashion-MNIST): bundled, verified, parsed.

Each dataset is an ``IdxSet``: four ``.gz`` files with their published SHA-256,
mirrors to download missing files from, and where the copy bundled with
mirrorfit lives. ``load`` checks every file before parsing it; a file whose hash
belongs to another known set is named as that set's (the usual mistake: a
directory of Fashion-MNIST files given to ``mnist.load_data``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["ChecksumError", "IdxSet", "load"]

_IDX_UBYTE = 0x08  # idx type code for unsigned bytes
_TIMEOUT_S = 60.0
_Arrays = tuple[np.ndarray, np.ndarray]
_KNOWN: dict[str, tuple[IdxSet, str]] = {}  # SHA-256 -> (set, file name), filled by IdxSet


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the published one."""


@dataclass(frozen=True)
class IdxSet:
    """One idx dataset: its files, mirrors and bundled copy.

    Attributes:
        title: the name users know ("MNIST").
        module: the ``mirrorfit.datasets`` module that loads it ("mnist").
        files: array name -> (file name, SHA-256 of the ``.gz`` file).
        bundled: the package folder of the bundled copy ("_data").
    """

    title: str
    module: str
    files: dict[str, tuple[str, str]]
    bundled: str

    def __post_init__(self) -> None:
        for filename, sha256 in self.files.values():
            _KNOWN[sha256] = (self, filename)


def load(dataset: IdxSet, path: str | os.PathLike[str] | None,
         mirrors: Sequence[str]) -> tuple[_Arrays, _Arrays]:
    """``((x_train, y_train), (x_test, y_test))`` of ``dataset`` (see ``mnist.load_data``)."""
    arrays = {}
    for key, (filename, sha256) in dataset.files.items():
        ndim = 3 if key.startswith("x") else 1
        if path is None:
            raw = (resources.files("mirrorfit.datasets") / dataset.bundled / filename).read_bytes()
        else:
            raw = _read_dir(dataset, Path(path), filename, sha256, mirrors)
        _verify(dataset, raw, filename, sha256, ndim, path)
        arrays[key] = _parse_idx(raw, filename, ndim, dataset.title)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_dir(dataset: IdxSet, directory: Path, filename: str, sha256: str,
              mirrors: Sequence[str]) -> bytes:
    target = directory / filename
    if not target.is_file():
        _download(dataset, filename, target, sha256, mirrors)
    return target.read_bytes()


def _verify(dataset: IdxSet, raw: bytes, filename: str, expected: str, ndim: int,
            path: str | os.PathLike[str] | None) -> None:
    actual = hashlib.sha256(raw).hexdigest()
    if actual == expected:
        return
    where = f"{dataset.title} file {filename!r}" + ("" if path is None else f" in {path}")
    other = _KNOWN.get(actual)
    if other is not None and other[0] is not dataset:
        owner, its_name = other
        raise ChecksumError(
            f"{where} is {owner.title}'s {its_name}, not {dataset.title}'s (SHA-256 {actual}). "
            f"Load that directory with mirrorfit.datasets.{owner.module}.load_data(path), or "
            f"point path at the {dataset.title} files.")
    try:
        shape = _parse_idx(raw, filename, ndim, dataset.title).shape
    except ValueError:
        raise ChecksumError(
            f"{where} has SHA-256 {actual}, expected {expected}, and is not a valid idx file: "
            f"it is corrupted or truncated. Delete it so that it is downloaded again.") from None
    raise ChecksumError(
        f"{where} is a valid idx file of shape {shape} but not {dataset.title}'s original "
        f"(SHA-256 {actual}, expected {expected}): another dataset in the same format, or "
        f"a modified copy. Point path at a directory with the original {dataset.title} files, "
        f"or pass path=None to use the copy bundled with mirrorfit.")


def _download(dataset: IdxSet, filename: str, target: Path, sha256: str,
              mirrors: Sequence[str]) -> None:
    """Fetch ``filename`` from the first mirror that answers, verified, into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in mirrors:
        url = base + filename
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
                digest = _copy_hashing(r.read, tmp.write)
            if digest != sha256:
                raise ChecksumError(f"{dataset.title} file {filename!r} downloaded from {url} "
                                    f"has SHA-256 {digest}, expected {sha256}; nothing was saved.")
            os.replace(tmp_name, target)
            return
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            failures.append(f"{url}: {err}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_name)
    raise OSError(f"{dataset.title} file {filename!r} is not in {target.parent} and could not "
                  f"be downloaded: {'; '.join(failures)}. Copy the file there, or pass "
                  f"path=None to use the bundled copy.")


def _copy_hashing(read: Callable[[int], bytes], write: Callable[[bytes], object]) -> str:
    """Stream ``read`` into ``write`` in 1 MiB chunks; return the SHA-256 of the bytes."""
    digest = hashlib.sha256()
    while chunk := read(1 << 20):
        digest.update(chunk)
        write(chunk)
    return digest.hexdigest()


def _parse_idx(raw: bytes, filename: str, ndim: int, title: str = "MNIST") -> np.ndarray:
    """Decode a gzipped idx file of unsigned bytes with ``ndim`` dims."""
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{title} file {filename!r} is not a valid gzip file: {err}") from err
    header = 4 + 4 * ndim
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        found = "a truncated header" if magic is None else f"0x{magic:08x}"
        raise ValueError(f"{title} file {filename!r} is not an idx file of {ndim}-dim uint8 "
                         f"data: expected magic number 0x{expected_magic:08x}, found {found}.")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(f"{title} file {filename!r} declares shape {dims} "
                         f"({int(np.prod(dims))} bytes) but holds {len(data) - header} bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
