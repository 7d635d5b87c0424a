"""Keras's steps arguments: ``fit(validation_steps=)``, ``evaluate(steps=)``,
``predict(steps=)`` take the first global batches; an infinite Dataset without them is a
clear error, not a loop that never ends. (Two replicas:
``tests/multiprocess/test_agreement.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

from mirrorfit.data import Dataset
from tests.models import linear_classifier


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 3, 40)


def _forever() -> Dataset:
    x, y = _data()
    return Dataset.from_tensor_slices((x, y)).repeat().batch(8)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("call, message", [
    (lambda m: m.fit(_forever(), verbose=0),
     "The training data is infinite (a Dataset repeated without a count), so it would never "
     "end; pass steps_per_epoch=N"),
    (lambda m: m.fit(_forever(), steps_per_epoch=2, validation_data=_forever(), verbose=0),
     "The validation data is infinite (a Dataset repeated without a count), so it would "
     "never end; pass validation_steps=N"),
    (lambda m: m.evaluate(_forever(), verbose=0),
     "The data passed to evaluate() is infinite (a Dataset repeated without a count), so it "
     "would never end; pass steps=N"),
    (lambda m: m.predict(_forever().map(lambda x, y: (x,)), verbose=0),
     "The data passed to predict() is infinite (a Dataset repeated without a count), so it "
     "would never end; pass steps=N"),
    (lambda m: m.evaluate(_forever(), steps=0, verbose=0),
     "steps must be a positive integer (global batches); received 0."),
])
def test_an_infinite_dataset_without_steps_is_an_error_not_a_hang(call, message):
    with pytest.raises(ValueError) as err:
        call(linear_classifier())
    assert str(err.value).startswith(message)


def test_steps_take_the_first_global_batches():
    x, y = _data()
    model = linear_classifier()
    first = model.evaluate(x[:24], y[:24], batch_size=8, return_dict=True, verbose=0)
    assert model.evaluate(_forever(), steps=3, return_dict=True, verbose=0) == first
    assert model.evaluate(x, y, batch_size=8, steps=3, return_dict=True, verbose=0) == first
    np.testing.assert_array_equal(model.predict(x, batch_size=8, steps=2, verbose=0),
                                  model.predict(x[:16], batch_size=8, verbose=0))
    history = model.fit(_forever(), steps_per_epoch=2, epochs=2, validation_data=_forever(),
                        validation_steps=3, verbose=0).history
    assert history["val_loss"][-1] == pytest.approx(
        model.evaluate(x[:24], y[:24], batch_size=8, verbose=0)[0], rel=1e-12)
