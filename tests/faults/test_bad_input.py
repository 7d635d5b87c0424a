"""Bad input: more devices than the host has, too little data for the replicas,
and data that does not fit the model or the loss. Each is an error that names the
value received and what was expected, printed once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit import devices as devices_mod
from tests.faults import jobs
from tests.faults.helpers import assert_one_error, assert_workers_gone, headline, run_job


# --- before any worker starts ---------------------------------------------------------------
@pytest.mark.multiprocess
@pytest.mark.slow  # a GPU request on a CPU host; tests/test_model.py checks the message
def test_more_devices_than_exist_fails_in_the_parent(tmp_path, fault_table):
    out = run_job(tmp_path, jobs.TOO_MANY_DEVICES)
    out.fault_at = out.ended_at - out.result.seconds  # no worker: time the whole run
    fault_table.add("more GPUs requested than exist", out, headline(out))
    assert out.result.returncode != 0
    assert "asks for more GPUs than this host has" in out.stderr
    assert out.stderr.count("Traceback (most recent call last)") == 1
    assert not out.pids, "workers were started"


def test_device_count_beyond_the_gpus_names_what_exists(monkeypatch):
    monkeypatch.setattr(devices_mod, "list_devices", lambda: ["cuda:0", "cuda:1"])
    with pytest.raises(ValueError, match=r"devices=4 asks for more GPUs than this host has "
                                         r"\(2 visible: cuda:0, cuda:1\)"):
        devices_mod.resolve_devices(4)


# --- at fit, on every worker: shown once ------------------------------------------------------
@pytest.mark.parametrize(("point", "message"), [
    ("few_samples", "ValueError: The training data has 1 samples, fewer than the 2 replicas"),
    ("bad_labels", "ValueError: Sparse labels must be class ids in [0, 2) for y_pred with 2 "
                   "classes; received y_true of shape (8,) and dtype int64 with values from 4 "
                   "to 5."),
])
@pytest.mark.multiprocess
def test_bad_data_on_every_worker_is_reported_once(tmp_path, fault_table, point, message):
    out = run_job(tmp_path, jobs.FAULT, point, "-1")
    fault_table.add(f"{point.replace('_', ' ')} (every rank)", out, headline(out))
    assert_workers_gone(out)
    rank = 0 if "worker rank 0 failed" in out.stderr else 1  # the earlier of the two
    assert_one_error(out, rank, message)


# --- data that does not fit the model or the loss (one process) ------------------------------
def _fit(layer: torch.nn.Module, x, y=None, loss="sparse_categorical_crossentropy"):
    model = mirrorfit.Model(torch.nn.Sequential(layer))
    model.compile("sgd", loss)
    if y is None:
        return model.predict(x, batch_size=4)
    return model.fit(x, y, batch_size=8, verbose=0)


X = np.zeros((16, 10), "float32")
Y = np.zeros(16, "int64")


def _notes(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value) + "\n" + "\n".join(getattr(exc.value, "__notes__", []))


def test_wrong_feature_count_names_x_and_the_first_layer():
    with pytest.raises(RuntimeError) as exc:
        _fit(torch.nn.Linear(20, 2), X, Y)
    text = _notes(exc)
    assert "x = (8, 10) float32" in text
    assert "'0' (Linear(in_features=20, out_features=2, bias=True)), expects x of shape " \
           "(batch, ..., 20) and dtype float32" in text
    assert "x's last dim is 10, not 20" in text


@pytest.mark.parametrize(("x", "dtype"), [(X.astype("int64"), "int64"),
                                          (torch.zeros(16, 10, dtype=torch.float64), "float64")])
def test_wrong_dtype_names_x_and_the_weights_dtype(x, dtype):
    with pytest.raises(RuntimeError) as exc:
        _fit(torch.nn.Linear(10, 2), x, Y)
    assert f"x is {dtype} but the layer's weights are float32: convert x" in _notes(exc)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy",
                                  mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True)])
@pytest.mark.parametrize("label", [2, -1])
def test_labels_out_of_range_name_the_range_and_the_classes(loss, label):
    with pytest.raises(ValueError, match=rf"Sparse labels must be class ids in \[0, 2\) for "
                                         rf"y_pred with 2 classes; received y_true of shape "
                                         rf"\(8,\) and dtype int64 with values from {label} to "
                                         rf"{label}"):
        _fit(torch.nn.Linear(10, 2), X, np.full(16, label), loss=loss)


def test_a_torch_loss_failing_on_the_labels_gets_the_tensors_named():
    with pytest.raises(IndexError) as exc:
        _fit(torch.nn.Linear(10, 2), X, np.full(16, 7), loss=torch.nn.CrossEntropyLoss())
    text = _notes(exc)
    assert "the loss failed on x = (8, 10) float32, y = (8,) int64 with values from 7 to 7, " \
           "y_pred = (8, 2) float32" in text


def test_target_shape_that_does_not_match_the_output_is_named():
    with pytest.raises(ValueError, match=r"y_pred \(8, 2\), y_true \(8, 3\)"):
        _fit(torch.nn.Linear(10, 2), X, np.zeros((16, 3), "float32"), loss="mse")


def test_channels_last_images_are_recognised():
    with pytest.raises(RuntimeError) as exc:
        _fit(torch.nn.Conv2d(3, 4, 3), np.zeros((4, 8, 8, 3), "float32"))
    text = _notes(exc)
    assert "expects x of shape (batch, 3, H, W)" in text
    assert "x has 8 channels in dim 1, not 3. It looks channels-last" in text


@pytest.mark.parametrize(("x", "words"), [
    (np.zeros((4, 5), "float32"), "x is float32; an Embedding needs integer indices"),
    (np.full((4, 5), 12), "x holds indices from 12 to 12, outside [0, 10)"),
])
def test_embedding_inputs_are_checked(x, words):
    with pytest.raises((RuntimeError, IndexError)) as exc:
        _fit(torch.nn.Embedding(10, 4), x)
    assert words in _notes(exc)


def test_an_error_unrelated_to_the_data_gets_no_note():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("bug in user code")

    with pytest.raises(RuntimeError, match="bug in user code") as exc:
        _fit(Broken(), X, Y)
    assert not getattr(exc.value, "__notes__", None)
