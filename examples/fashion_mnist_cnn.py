"""The HPC centre's Keras CIFAR-10 CNN, on Fashion-MNIST, data-parallel on 2 workers.

The seed (an HPC centre's multi-GPU Keras page) wraps this CNN in
``multi_gpu_model(model, gpus=2)`` and compiles it with
``rmsprop(lr=0.0001, decay=1e-6)`` and ``categorical_crossentropy`` on one-hot
labels. Here the same layers are torch modules, the same optimizer settings
(Keras's RMSprop: rho 0.9, epsilon 1e-7) and the same loss on one-hot labels,
and ``MirroredStrategy(devices=2)`` replaces ``multi_gpu_model``. Keras 2's
``decay=1e-6`` (lr / (1 + 1e-6 * step)) would lower the learning rate by 0.4%
over 2 epochs of 60,000 images at batch 32; it is left out.

    python examples/fashion_mnist_cnn.py                  # 2 workers, 2 epochs
    python examples/fashion_mnist_cnn.py --train-samples 2000 --epochs 1   # a quick check
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

import mirrorfit


def build_module(num_classes: int = 10) -> nn.Module:
    """Keras's cifar10_cnn layers, for 1x28x28 images (Conv2D -> nn.Conv2d, Dense -> Linear)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(),    # Conv2D(32, (3, 3), padding='same')
        nn.Conv2d(32, 32, 3), nn.ReLU(),                   # Conv2D(32, (3, 3))
        nn.MaxPool2d(2), nn.Dropout(0.25),                 # MaxPooling2D((2, 2)), Dropout(0.25)
        nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(),
        nn.Conv2d(64, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(),                                      # 64 x 5 x 5
        nn.Linear(64 * 5 * 5, 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, num_classes), nn.Softmax(dim=-1),   # Dense(10), Activation('softmax')
    )


def load(train_samples: int, test_samples: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Images as float32 (N, 1, 28, 28) in [0, 1]; labels one-hot (keras.utils.to_categorical)."""
    (x_train, y_train), (x_test, y_test) = mirrorfit.datasets.fashion_mnist.load_data()
    one_hot = np.eye(10, dtype=np.float32)

    def prepare(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        return x[:n, None].astype(np.float32) / 255.0, one_hot[y[:n]]

    return prepare(x_train, y_train, train_samples), prepare(x_test, y_test, test_samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=2, help="replicas (gpus=2 in the seed)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    strategy = mirrorfit.MirroredStrategy(devices=args.devices)
    mirrorfit.set_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load(args.train_samples, args.test_samples)

    with strategy.scope():
        model = mirrorfit.Model(build_module())
        optimizer = torch.optim.RMSprop(model.module.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy",
                      metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(x_test, y_test), shuffle=True)
    results = model.evaluate(x_test, y_test, batch_size=256, return_dict=True, verbose=0)
    if strategy.is_chief:
        print(f"test loss: {results['loss']:.4f} - test accuracy: {results['accuracy']:.4f}")


if __name__ == "__main__":
    main()
