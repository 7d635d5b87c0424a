"""Fashion-MNIST clothing images, loaded like ``keras.datasets.fashion_mnist.load_data()``.

Same format and sizes as MNIST (28x28 grey images, 10 classes), harder to
classify. The four idx ``.gz`` files ship inside mirrorfit
(``datasets/_data/fashion_mnist``); every file is checked against its SHA-256
before it is parsed.

Classes 0..9: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
Sneaker, Bag, Ankle boot (:data:`CLASS_NAMES`).

Credit and licence: Fashion-MNIST is by Han Xiao, Kashif Rasul and Roland
Vollgraf, Zalando Research (https://github.com/zalandoresearch/fashion-mnist),
Copyright (c) 2017 Zalando SE, under the MIT licence.

Example:
    >>> from mirrorfit.datasets import fashion_mnist
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    >>> x_train.shape, x_train.dtype, fashion_mnist.CLASS_NAMES[y_test[0]]
    ((60000, 28, 28), dtype('uint8'), 'Ankle boot')
"""

from __future__ import annotations

import os

import numpy as np

from mirrorfit.datasets._idx import ChecksumError, IdxSet, load

__all__ = ["CLASS_NAMES", "FILES", "MIRRORS", "ChecksumError", "load_data"]

FILES: dict[str, tuple[str, str]] = {
    "x_train": ("train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "y_train": ("train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "x_test": ("t10k-images-idx3-ubyte.gz",
               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "y_test": ("t10k-labels-idx1-ubyte.gz",
               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}
"""Array name -> (file name, SHA-256 of the ``.gz`` file)."""

MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
"""Base URLs tried in order when a directory given as ``path`` lacks a file."""

CLASS_NAMES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
"""The label names, by label."""

_SET = IdxSet("Fashion-MNIST", "fashion_mnist", FILES, "_data/fashion_mnist")
_Arrays = tuple[np.ndarray, np.ndarray]


def load_data(path: str | os.PathLike[str] | None = None) -> tuple[_Arrays, _Arrays]:
    """Load Fashion-MNIST as ``((x_train, y_train), (x_test, y_test))`` uint8 numpy arrays.

    Args:
        path: ``None`` reads the copy bundled with mirrorfit. Otherwise a directory
            holding (or to hold) the four idx ``.gz`` files; missing files are
            downloaded from :data:`MIRRORS` into it, verified, then renamed into place.

    Returns:
        ``x_train`` (60000, 28, 28), ``y_train`` (60000,), ``x_test`` (10000, 28, 28),
        ``y_test`` (10000,), all uint8; pixels 0..255, labels 0..9 (6,000 per class in
        training, 1,000 in test).

    Raises:
        ChecksumError: a file's SHA-256 differs from the published one (the message says
            whether it is MNIST's file, another valid idx file, or a corrupted one).
        ValueError: a file that is not a valid idx ``.gz`` file.
        OSError: a missing file that no mirror could provide.
    """
    return load(_SET, path, MIRRORS)
