"""The README's main job, on a reduced size: MNIST on 2 CPU workers."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.procs import REPO, run_python

pytestmark = pytest.mark.multiprocess


def test_mnist_demo_trains_on_two_workers_with_keras_progress():
    res = run_python(REPO / "examples" / "mnist_mlp.py", "--devices", "2", "--epochs", "2",
                     "--train-samples", "6000", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "Number of devices: 2" in out
    assert out.count("Epoch 1/2") == 1 and out.count("Epoch 2/2") == 1  # the chief alone prints
    assert re.search(r"94/94 ━+ \d+s \d+ms/step - loss: [\d.]+ - accuracy: [\d.]+ - "
                     r"val_loss: [\d.]+ - val_accuracy: [\d.]+", out), out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert accuracy > 0.9  # 6,000 images, 2 epochs
    assert res.stderr.strip() == "", res.stderr


@pytest.mark.slow  # two workers importing Keras and training a CNN: ~40 s of CPU
@pytest.mark.skipif(importlib.util.find_spec("keras") is None,
                    reason="keras is not installed (pip install -e '.[dev]')")
def test_keras_model_example_trains_the_seed_cnn_on_two_workers():
    res = run_python(REPO / "examples" / "keras_model.py", "--devices", "2", "--epochs", "1",
                     "--train-samples", "3000", "--test-samples", "1000", timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "Number of devices: 2" in out and out.count("Epoch 1/1") == 1
    assert re.search(r"47/47 ━+ .* - loss: [\d.]+ - accuracy: [\d.]+ - val_loss", out), out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert accuracy > 0.6  # 3,000 images, one epoch, dropout active (0.83 when written)
    assert res.stderr.strip() == "", res.stderr


def test_fashion_mnist_cnn_trains_the_seed_cnn_on_two_workers():
    res = run_python(REPO / "examples" / "fashion_mnist_cnn.py", "--epochs", "1",
                     "--train-samples", "1280", "--test-samples", "500", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert out.count("Epoch 1/1") == 1  # the chief alone prints
    assert re.search(r"40/40 ━+ .* - loss: [\d.]+ - accuracy: [\d.]+ - val_loss", out), out
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert accuracy > 0.3  # 10 classes: chance is 0.1; 40 steps of RMSprop at 1e-4
    assert res.stderr.strip() == "", res.stderr
