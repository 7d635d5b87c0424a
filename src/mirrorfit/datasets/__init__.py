"""Ready-to-use datasets, loaded like ``keras.datasets``.

``mnist.load_data()`` returns the bundled MNIST digits (CC BY-SA 3.0, Yann LeCun,
Corinna Cortes and Chris Burges) as numpy arrays.
"""

from __future__ import annotations

from mirrorfit.datasets import mnist

__all__ = ["mnist"]
