"""What the Keras multi-process tests train: :func:`train` runs in the test process (one
replica) and, through :data:`REPLICAS`, in real gloo workers."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import mirrorfit


def train(strategy: mirrorfit.Strategy | None) -> dict[str, Any]:
    """Conv2D, MaxPooling2D, BatchNormalization, Flatten and a regularised Dense, 3 epochs."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # 97 samples in global batches of 24: the last batch (1 sample) leaves replica 1 of 2
    # an empty share, whose dummy sample must add nothing to the synced statistics
    x = rng.normal(size=(97, 8, 8, 1)).astype("float32")
    y = ((x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64")
         + (x[:, :, :4].mean(axis=(1, 2, 3)) > 0))
    net = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(1e-3)),
    ])
    model = mirrorfit.Model(net)
    model.compile(mirrorfit.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                  mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    hist = model.fit(x, y, batch_size=24, epochs=3, verbose=0, seed=5)
    return {"history": hist.history,
            "eval": model.evaluate(x, y, batch_size=32, return_dict=True, verbose=0),
            "moving_mean": net.layers[2].moving_mean.numpy().tolist(),
            "weights": model.get_weights()}


REPLICAS = r'''
import json, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
import mirrorfit

strategy = mirrorfit.MirroredStrategy(devices=2, sync_batchnorm=True)
from tests.keras.jobs import train  # imports keras after the strategy: not in the parent

with strategy.scope():
    result = train(strategy)
if strategy.is_chief:
    np.savez(sys.argv[1], *result.pop("weights"))
result.pop("weights", None)
sys.stdout.write("JSON " + json.dumps({"rank": strategy.rank, **result}) + "\n")
sys.stdout.flush()
'''
