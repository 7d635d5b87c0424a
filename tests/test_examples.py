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


def _assert_learned_and_sampled(out: str) -> None:
    """A Shakespeare example's chief output: one epoch line, a validation loss well
    below a uniform guess, and a generated sample."""
    assert out.count("Epoch 1/1") == 1  # the chief alone prints
    found = re.search(r"val loss: ([\d.]+) \(a uniform guess: ([\d.]+)\)", out)
    assert found and float(found.group(1)) < float(found.group(2)) - 0.5, out  # 3.14 vs 4.11
    assert re.search(r"sample: .{5,}", out, re.S)


@pytest.mark.slow  # `pytest -m slow` runs it
def test_shakespeare_transformer_trains_in_two_pipeline_stages():
    res = run_python(REPO / "examples" / "shakespeare_pipeline.py", "--epochs", "1",
                     "--samples", "512", "--context", "32", "--width", "64", "--generate", "20",
                     "--schedule", "1f1b", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    # the same model as the sharded example, cut where the stages are most even
    assert "vocabulary 61, 110,013 parameters, stages of 55,936 + 54,077" in out
    _assert_learned_and_sampled(out)
    assert res.stderr.strip() == "", res.stderr


@pytest.mark.slow  # `pytest -m slow` runs it
def test_shakespeare_transformer_trains_sharded_on_two_workers():
    res = run_python(REPO / "examples" / "shakespeare_sharded.py", "--devices", "2",
                     "--epochs", "1", "--samples", "512", "--context", "32", "--width", "64",
                     "--generate", "20", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "vocabulary 61, 110,013 parameters, 2 replica(s)" in out
    _assert_learned_and_sampled(out)
    # FSDP2 warns once that the root returns a view (Linear on (B, T, C)); mirrorfit's
    # losses and metrics never modify outputs in place. Nothing else may reach stderr.
    noise = [line for line in res.stderr.splitlines() if line.strip()
             and "returned a view tensor" not in line and "_register_pre_backward_hook" not in line]
    assert noise == [], res.stderr
