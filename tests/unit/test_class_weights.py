"""Keras's fit(class_weight=...): the weight of each sample's class on the training loss,
as per-sample weights; validation is not weighted; bad input names the value and the fix.
(Two replicas: ``tests/multiprocess/test_agreement.py``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.class_weights import class_sample_weight
from tests.models import linear_classifier


@pytest.mark.parametrize("y", [
    np.array([0, 2, 1, 2]),                                      # class ids
    np.array([[0], [2], [1], [2]]),                              # (n, 1)
    np.eye(3, dtype="float32")[[0, 2, 1, 2]],                    # one-hot
    np.array([0.0, 2.0, 0.9, 2.1], dtype="float32"),             # floats, rounded
    [0, 2, 1, 2],                                                # a list
])
def test_each_label_form_names_its_class(y):
    out = class_sample_weight(y, {1: 3.0, 2: 0.5}, None)
    assert out.tolist() == [1.0, 0.5, 3.0, 0.5]  # class 0 is missing: weight 1


def test_sample_weight_multiplies_and_labels_above_the_dict_weigh_one():
    sw = np.array([[2.0], [1.0], [4.0]], dtype="float32")
    assert class_sample_weight(np.array([5, 1, 0]), {1: 3}, sw).tolist() == [2.0, 3.0, 4.0]



def test_sample_weights_of_another_length_or_shape_are_refused_as_without_class_weight():
    with pytest.raises(ValueError, match=r"All inputs must have the same number of samples; "
                                         r"received y: 3, sample_weight: 2\. Pass one weight"):
        class_sample_weight(np.array([0, 1, 1]), {1: 2.0}, np.ones(2, "float32"))
    x, y = np.zeros((2, 4), "float32"), np.array([0, 1])
    with pytest.raises(ValueError, match=r"sample_weight of shape \(2, 2\) does not fit"):
        linear_classifier().fit(x, y, sample_weight=np.ones((2, 2), "float32"),
                                class_weight={1: 2.0}, verbose=0)

@pytest.mark.parametrize("class_weight, message", [
    ([1.0, 2.0], "class_weight must be a dict of class ids to weights, e.g. {0: 1.0, 1: 5.0}; "
                 "received list."),
    ({"cat": 1.0}, "class_weight's keys are class ids (integers >= 0); received 'cat'."),
    ({-1: 1.0}, "class_weight's keys are class ids (integers >= 0); received -1."),
    ({0: -2.0}, "class_weight[0] must be a finite number >= 0; received -2.0."),
    ({0: float("nan")}, "class_weight[0] must be a finite number >= 0; received nan."),
])
def test_a_bad_class_weight_names_the_value(class_weight, message):
    with pytest.raises(ValueError) as err:
        class_sample_weight(np.array([0, 1]), class_weight, None)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("y, message", [
    (None, "class_weight needs one array of labels y; received no labels."),
    ({"a": np.zeros(2)}, "class_weight needs one array of labels y; received a dict of targets."),
    (np.zeros((2, 3, 4)), "class_weight needs labels of shape (n,), (n, 1) or one-hot "
                          "(n, classes); received shape (2, 3, 4)."),
    (np.array([-1, 0]), "class_weight needs class ids >= 0 in y; received labels from -1 to 0."),
])
def test_labels_that_name_no_class_are_refused(y, message):
    with pytest.raises(ValueError) as err:
        class_sample_weight(y, {0: 2.0}, None)
    assert str(err.value).startswith(message)


def test_fit_with_class_weight_trains_as_with_those_sample_weights_and_leaves_validation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 4)).astype("float32"), rng.integers(0, 3, 50)
    weights = {0: 1.0, 1: 4.0, 2: 0.25}
    by_class = linear_classifier()
    h1 = by_class.fit(x, y, batch_size=8, epochs=2, verbose=0, seed=3, class_weight=weights,
                      validation_split=0.2).history
    by_sample = linear_classifier()
    sw = np.array([weights[int(c)] for c in y[:40]], dtype="float32")
    h2 = by_sample.fit(x[:40], y[:40], batch_size=8, epochs=2, verbose=0, seed=3,
                       sample_weight=sw, validation_data=(x[40:], y[40:])).history
    assert h1 == h2
    unweighted = linear_classifier().fit(x, y, batch_size=8, epochs=1, verbose=0, seed=3,
                              validation_split=0.2).history
    assert h1["loss"][0] != unweighted["loss"][0]  # the weights took effect
    # validation is never weighted by class: it equals evaluate on the held-out samples
    assert h1["val_loss"][-1] == pytest.approx(by_class.evaluate(x[40:], y[40:], verbose=0)[0],
                                               rel=1e-6)


def test_class_weight_with_a_dataset_says_how_to_weigh_its_elements():
    ds = mirrorfit.data.Dataset.from_tensor_slices((np.zeros((8, 4), "float32"),
                                                    np.zeros(8, "int64"))).batch(4)
    with pytest.raises(ValueError, match=r"a Dataset or DataLoader gives each element its "
                                         r"weight itself, e\.g\. ds\.map\("):
        linear_classifier().fit(ds, class_weight={0: 2.0}, verbose=0)


def test_metrics_ignore_sample_weights_and_weighted_metrics_use_them(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)).astype("float32"), rng.integers(0, 3, 30)
    w = rng.uniform(0.0, 3.0, 30).astype("float32")
    torch.manual_seed(0)
    model = mirrorfit.Model(torch.nn.Linear(4, 3))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"],
                  weighted_metrics=["accuracy", "sparse_categorical_accuracy"])
    hits = (model.predict(x, verbose=0).argmax(1) == y).astype("float64")
    logs = model.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0)
    assert sorted(logs) == ["accuracy", "loss", "sparse_categorical_accuracy", "weighted_accuracy"]
    assert logs["accuracy"] == pytest.approx(hits.mean(), rel=1e-12)  # as in Keras
    assert logs["weighted_accuracy"] == pytest.approx((hits * w).sum() / w.sum(), rel=1e-6)
    history = model.fit(x, y, class_weight={0: 5.0}, batch_size=10, verbose=0).history
    assert sorted(history) == sorted(logs)
    model.save(tmp_path / "m.pt")
    loaded = mirrorfit.load_model(tmp_path / "m.pt", module=torch.nn.Linear(4, 3))
    assert loaded.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0) == pytest.approx(
        model.evaluate(x, y, sample_weight=w, return_dict=True, verbose=0))
