"""Ready-to-use datasets, loaded like ``keras.datasets``.

``mnist.load_data()`` returns the bundled MNIST digits (CC BY-SA 3.0, Yann LeCun,
Corinna Cortes and Chris Burges), ``fashion_mnist.load_data()`` the bundled
Fashion-MNIST clothing images (MIT, Zalando SE), as numpy arrays.
"""

from __future__ import annotations

from mirrorfit.datasets import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]
