"""MNIST handwritten digits, loaded like ``keras.datasets.mnist.load_data()``.

The four original idx ``.gz`` files ship inside mirrorfit (``datasets/_data``),
so the default call needs no network. Every file is checked against its
published SHA-256 before it is parsed.

Credit and licence: the MNIST database is by Yann LeCun, Corinna Cortes and
Christopher J. C. Burges (http://yann.lecun.com/exdb/mnist/), distributed under
the Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0).

Example:
    >>> from mirrorfit.datasets import mnist
    >>> (x_train, y_train), (x_test, y_test) = mnist.load_data()
    >>> x_train.shape, x_train.dtype, y_test.shape
    ((60000, 28, 28), dtype('uint8'), (10000,))
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
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["FILES", "MIRRORS", "ChecksumError", "load_data"]

FILES: dict[str, tuple[str, str]] = {
    "x_train": ("train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "y_train": ("train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "x_test": ("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "y_test": ("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
"""Array name -> (file name, SHA-256 of the ``.gz`` file)."""

MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
"""Base URLs tried in order when a directory given as ``path`` lacks a file."""

_IDX_UBYTE = 0x08  # idx type code for unsigned bytes
_TIMEOUT_S = 60.0
_Arrays = tuple[np.ndarray, np.ndarray]


class ChecksumError(ValueError):
    """A file's SHA-256 differs from the published one."""


def load_data(path: str | os.PathLike[str] | None = None) -> tuple[_Arrays, _Arrays]:
    """Load MNIST as ``((x_train, y_train), (x_test, y_test))`` uint8 numpy arrays.

    Args:
        path: ``None`` reads the copy bundled with mirrorfit. Otherwise a directory
            holding (or to hold) the four idx ``.gz`` files; missing files are
            downloaded from :data:`MIRRORS` into it (written to a temporary file,
            verified, then renamed into place). Unlike Keras, this is a directory,
            not an ``.npz`` file name.

    Returns:
        ``x_train`` (60000, 28, 28), ``y_train`` (60000,), ``x_test`` (10000, 28, 28),
        ``y_test`` (10000,), all uint8; pixels 0..255, labels 0..9.

    Raises:
        ChecksumError: a file's SHA-256 differs from the published one (a half-downloaded
            file is removed; a user's own file is left for them to delete).
        ValueError: a file that is not a valid idx ``.gz`` file.
        OSError: a missing file that no mirror could provide.
    """
    arrays = {}
    for key, (filename, sha256) in FILES.items():
        raw = _read_bundled(filename) if path is None else _read_dir(Path(path), filename, sha256)
        _verify(raw, filename, sha256)
        arrays[key] = _parse_idx(raw, filename, ndim=3 if key.startswith("x") else 1)
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def _read_bundled(filename: str) -> bytes:
    return (resources.files("mirrorfit.datasets") / "_data" / filename).read_bytes()


def _read_dir(directory: Path, filename: str, sha256: str) -> bytes:
    target = directory / filename
    if not target.is_file():
        _download(filename, target, sha256)
    return target.read_bytes()


def _verify(raw: bytes, filename: str, expected: str) -> None:
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise ChecksumError(f"MNIST file {filename!r} has SHA-256 {actual}, expected {expected}. "
                            f"The file is corrupted or not the original; delete it so that it is "
                            f"downloaded again.")


def _download(filename: str, target: Path, sha256: str) -> None:
    """Fetch ``filename`` from the first mirror that answers, verified, into ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in MIRRORS:
        url = base + filename
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
                digest = _copy_hashing(r.read, tmp.write)
            if digest != sha256:
                raise ChecksumError(f"MNIST file {filename!r} downloaded from {url} has SHA-256 "
                                    f"{digest}, expected {sha256}; nothing was saved.")
            os.replace(tmp_name, target)
            return
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            failures.append(f"{url}: {err}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_name)
    raise OSError(f"MNIST file {filename!r} is not in {target.parent} and could not be "
                  f"downloaded: {'; '.join(failures)}. Copy the file there, or pass path=None "
                  f"to use the bundled copy.")


def _copy_hashing(read: Callable[[int], bytes], write: Callable[[bytes], object]) -> str:
    """Stream ``read`` into ``write`` in 1 MiB chunks; return the SHA-256 of the bytes."""
    digest = hashlib.sha256()
    while chunk := read(1 << 20):
        digest.update(chunk)
        write(chunk)
    return digest.hexdigest()


def _parse_idx(raw: bytes, filename: str, ndim: int) -> np.ndarray:
    """Decode a gzipped idx file of unsigned bytes with ``ndim`` dims."""
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"MNIST file {filename!r} is not a valid gzip file: {err}") from err
    header = 4 + 4 * ndim
    expected_magic = (_IDX_UBYTE << 8) | ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected_magic:
        found = "a truncated header" if magic is None else f"0x{magic:08x}"
        raise ValueError(f"MNIST file {filename!r} is not an idx file of {ndim}-dim uint8 data: "
                         f"expected magic number 0x{expected_magic:08x}, found {found}.")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(dims)):
        raise ValueError(f"MNIST file {filename!r} declares shape {dims} "
                         f"({int(np.prod(dims))} bytes) but holds {len(data) - header} bytes.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()
