"""A Keras 3 model trained by mirrorfit: the HPC guide's CNN (Conv2D, MaxPooling2D,
Dropout, Flatten, Dense, a softmax head, RMSprop with Keras 2's decay), on MNIST.

    python examples/keras_model.py                      # 2 CPU workers (every GPU if any)
    python examples/keras_model.py --devices 1 --epochs 1 --train-samples 6000

The Keras model is the guide's code unchanged; what changes is around it: mirrorfit's
strategy instead of ``multi_gpu_model``, ``mirrorfit.optimizers.RMSprop`` instead of
``keras.optimizers.rmsprop`` (same arguments), and ``mirrorfit.Model(model)`` to train.
Needs ``pip install keras`` (Keras 3, which runs on torch with ``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import mirrorfit

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported


def build_model(num_classes: int = 10):
    """The guide's CNN at MNIST's size (channels last, as Keras)."""
    import keras
    from keras.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D

    model = keras.Sequential()
    model.add(keras.Input((28, 28, 1)))
    model.add(Conv2D(16, (3, 3), padding="same"))
    model.add(Activation("relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Conv2D(32, (3, 3)))
    model.add(Activation("relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(128))
    model.add(Activation("relu"))
    model.add(Dropout(0.5))
    model.add(Dense(num_classes))
    model.add(Activation("softmax"))  # probabilities: categorical_crossentropy's default
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=None,
                        help="replicas (default: every GPU, else 2 CPU workers)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--test-samples", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    devices = args.devices
    if devices is None:
        devices = None if mirrorfit.list_devices()[0].startswith("cuda") else 2
    strategy = mirrorfit.MirroredStrategy(devices=devices)
    if strategy.is_chief:
        print(f"Number of devices: {strategy.num_replicas_in_sync}")
    import keras  # after the strategy: the launching process never pays for it

    keras.utils.set_random_seed(args.seed)
    mirrorfit.set_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = mirrorfit.datasets.mnist.load_data()
    x_train = x_train[:args.train_samples, :, :, None].astype(np.float32) / 255.0
    x_test = x_test[:args.test_samples, :, :, None].astype(np.float32) / 255.0
    y_train = keras.utils.to_categorical(y_train[:args.train_samples], 10)
    y_test = keras.utils.to_categorical(y_test[:args.test_samples], 10)

    with strategy.scope():
        model = mirrorfit.Model(build_model())
        # the guide: keras.optimizers.rmsprop(lr=0.0001, decay=1e-6); a larger rate for
        # MNIST's few epochs
        opt = mirrorfit.optimizers.RMSprop(learning_rate=1e-3, decay=1e-6)
        model.compile(loss="categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(x_test[:1000], y_test[:1000]))
    results = model.evaluate(x_test, y_test, batch_size=256, return_dict=True, verbose=0)
    if strategy.is_chief:
        print(f"test loss: {results['loss']:.4f} - test accuracy: {results['accuracy']:.4f}")


if __name__ == "__main__":
    main()
