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

import os

import numpy as np

from mirrorfit.datasets._idx import ChecksumError, IdxSet, load

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

_SET = IdxSet("MNIST", "mnist", FILES, "_data")
_Arrays = tuple[np.ndarray, np.ndarray]


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
        ChecksumError: a file's SHA-256 differs from the published one: the message
            says whether it is another dataset's file (Fashion-MNIST's: load it with
            ``fashion_mnist.load_data``), another valid idx file, or a corrupted one
            (a half-downloaded file is removed; a user's own file is left to them).
        ValueError: a file that is not a valid idx ``.gz`` file.
        OSError: a missing file that no mirror could provide.
    """
    return load(_SET, path, MIRRORS)
