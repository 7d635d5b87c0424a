"""Model on one process: the Keras API and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import mirrorfit
from mirrorfit.model_inputs import check_batch_size
from mirrorfit.strategies.strategy import Strategy


def _data(n=96, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype("float32")
    y = (x.sum(1) > 0).astype("int64")
    return x, y


def _model(d=5, metrics=("accuracy",), optimizer="adam"):
    torch.manual_seed(0)
    model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.ReLU(),
                                                torch.nn.Linear(8, 2)))
    model.compile(optimizer, mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  list(metrics))
    return model


def test_fit_returns_keras_history_and_learns():
    x, y = _data(512)
    model = _model()
    hist = model.fit(x, y, batch_size=32, epochs=20, validation_data=(x[:64], y[:64]), verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 20 for v in hist.history.values())
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.8


def test_fit_accepts_tensors_torch_dataset_and_dataloader_alike():
    x, y = _data()
    results = []
    for data in [
        dict(x=torch.from_numpy(x), y=torch.from_numpy(y), batch_size=16),
        dict(x=TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16),
        dict(x=DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                          batch_size=16)),
    ]:
        model = _model(optimizer="sgd")
        model.fit(**data, epochs=1, verbose=0, shuffle=False)
        results.append(model.get_weights())
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_evaluate_forms_follow_keras():
    x, y = _data()
    model = _model()
    values = model.evaluate(x, y, verbose=0)
    assert isinstance(values, list) and len(values) == 2
    as_dict = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(as_dict) == ["loss", "accuracy"]
    assert as_dict["loss"] == pytest.approx(values[0])
    bare = _model(metrics=())
    assert isinstance(bare.evaluate(x, y, verbose=0), float)


def test_evaluate_counts_accuracy_exactly_on_odd_sizes():
    x, y = _data(1001)
    model = _model()
    logits = model.predict(x, batch_size=64)
    expected = float((logits.argmax(1) == y).mean())
    assert model.evaluate(x, y, batch_size=100, return_dict=True, verbose=0)["accuracy"] == expected


def test_predict_keeps_input_order():
    x, _ = _data(70)
    model = _model()
    out = model.predict(x, batch_size=16)
    direct = model.module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, direct, atol=1e-6)


def test_get_and_set_weights_round_trip_and_check_shapes():
    model = _model()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(8, 5), (8,), (2, 8), (2,)]
    model.set_weights([np.ones_like(w) for w in weights])
    assert all((w == 1).all() for w in model.get_weights())
    with pytest.raises(ValueError, match=r"0\.weight has shape \(8, 5\).*\(5, 8\)"):
        model.set_weights([np.ones((5, 8)), *weights[1:]])
    with pytest.raises(ValueError, match="expected 4 arrays, received 1"):
        model.set_weights(weights[:1])


def test_callbacks_see_keras_hooks_and_can_stop_training():
    seen = []

    class Spy(mirrorfit.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("train_begin")

        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch_end", epoch, sorted(logs)))
            if epoch == 1:
                self.model.stop_training = True

    x, y = _data()
    hist = _model().fit(x, y, epochs=10, verbose=0, callbacks=[Spy()])
    assert seen[0] == "train_begin"
    assert seen[1:] == [("epoch_end", 0, ["accuracy", "loss"]),
                        ("epoch_end", 1, ["accuracy", "loss"])]
    assert len(hist.history["loss"]) == 2


def test_progress_output_is_keras_like(capsys):
    x, y = _data()
    _model().fit(x, y, batch_size=32, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "3/3 ━━━━━━━━━━━━━━━━━━━━" in out
    assert " - loss: " in out and " - accuracy: " in out and "samples/s" in out


def test_validation_split_takes_the_last_fraction():
    x, y = _data(100)
    model = _model()
    hist = model.fit(x, y, validation_split=0.2, epochs=1, verbose=0, shuffle=False)
    ev = model.evaluate(x[80:], y[80:], return_dict=True, verbose=0)
    assert hist.history["val_accuracy"][0] == ev["accuracy"]


def test_sample_weight_zero_removes_samples():
    x, y = _data(64)
    w = np.r_[np.ones(32), np.zeros(32)].astype("float32")
    a = _model(optimizer="sgd")
    a.fit(x, y, sample_weight=w, batch_size=64, epochs=1, verbose=0, shuffle=False)
    b = _model(optimizer="sgd")
    b.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False)
    # weighted mean over 64 with half the weights 0 == half the gradient of the 32-sample mean
    assert not np.allclose(a.get_weights()[0], b.get_weights()[0])


# --- bad input ---------------------------------------------------------------------------
def test_fit_before_compile_says_what_to_do():
    model = mirrorfit.Model(torch.nn.Linear(2, 1))
    with pytest.raises(RuntimeError, match=r"call model.compile\("):
        model.fit(np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"))


def test_unknown_names_are_echoed():
    model = mirrorfit.Model(torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="adamm"):
        model.compile("adamm", "mse")
    with pytest.raises(ValueError, match="msee"):
        model.compile("adam", "msee")
    with pytest.raises(ValueError, match="acuracy"):
        model.compile("adam", "mse", ["acuracy"])


def test_length_mismatch_names_both_lengths():
    model = _model()
    with pytest.raises(ValueError, match=r"x: 10, y: 9"):
        model.fit(np.zeros((10, 5), "float32"), np.zeros(9, "int64"), verbose=0)


def test_wrong_model_type_is_rejected():
    with pytest.raises(TypeError, match="received int"):
        mirrorfit.Model(3)  # type: ignore[arg-type]


def test_global_batch_smaller_than_replicas_is_an_error():
    class TwoReplicas(Strategy):
        def __init__(self):
            super().__init__()
            self._world = 2

    with pytest.raises(ValueError, match=r"batch_size=1 is the global batch.*2 replicas"):
        check_batch_size(1, TwoReplicas())
    with pytest.raises(ValueError, match="positive integer"):
        check_batch_size(0, TwoReplicas())


def test_asking_for_gpus_that_do_not_exist_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this host has GPUs")
    with pytest.raises(ValueError, match=r"devices='cuda:3' asks for more GPUs.*0 visible"):
        mirrorfit.MirroredStrategy(devices=["cuda:3"])
    with pytest.raises(ValueError, match=">= 1"):
        mirrorfit.MirroredStrategy(devices=0)


def test_list_devices_and_default_strategy():
    devices = mirrorfit.list_devices()
    assert devices == ["cpu"] or all(d.startswith("cuda:") for d in devices)
    strategy = mirrorfit.MirroredStrategy(devices=1)
    assert strategy.num_replicas_in_sync == 1 and strategy.is_chief
    with strategy.scope():
        model = mirrorfit.Model(torch.nn.Linear(2, 1))
    assert model.strategy is strategy


# --- Keras semantics found wanting in review ------------------------------------------------
def test_dataloader_samplers_are_honoured_or_refused():
    from torch.utils.data import SubsetRandomSampler, WeightedRandomSampler

    x = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    ds = TensorDataset(x, torch.zeros(10, dtype=torch.int64))
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 2)

        def forward(self, inp):
            seen.extend(inp[:, 0].tolist())
            return self.lin(inp)

    model = mirrorfit.Model(Spy())
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    loader = DataLoader(ds, batch_size=2, sampler=SubsetRandomSampler(range(6)))
    model.fit(loader, epochs=1, verbose=0)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]  # the held-out samples 6..9 are never trained on
    weighted = DataLoader(ds, batch_size=2, sampler=WeightedRandomSampler([1.0] * 10, 10))
    with pytest.raises(ValueError, match="WeightedRandomSampler"):
        model.fit(weighted, epochs=1, verbose=0)


def test_sample_weight_of_shape_n_by_1_equals_shape_n():
    x, y = _data(64)
    w = np.linspace(0.1, 2.0, 64).astype("float32")
    a, b = _model(optimizer="sgd"), _model(optimizer="sgd")
    a.fit(x, y, sample_weight=w, batch_size=16, epochs=1, verbose=0, shuffle=False)
    b.fit(x, y, sample_weight=w[:, None], batch_size=16, epochs=1, verbose=0, shuffle=False)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    with pytest.raises(ValueError, match=r"sample_weight of shape \(16, 2\)"):
        b.fit(x, y, sample_weight=np.ones((64, 2), "float32"), batch_size=16, verbose=0)


def test_validation_split_rounds_like_keras_and_refuses_empty_sides():
    x, y = _data(10)
    model = _model()
    hist = model.fit(x, y, validation_split=0.25, epochs=1, verbose=0, shuffle=False)
    ev = model.evaluate(x[7:], y[7:], return_dict=True, verbose=0)  # Keras: 7 train, 3 val
    assert hist.history["val_loss"][0] == pytest.approx(ev["loss"], rel=1e-6)
    with pytest.raises(ValueError, match="leaves no training sample"):
        model.fit(x[:3], y[:3], validation_split=0.9, verbose=0)


def test_validation_data_may_be_a_list():
    x, y = _data(32)
    hist = _model().fit(x, y, validation_data=[x, y], epochs=1, verbose=0)
    assert "val_loss" in hist.history


def test_steps_per_epoch_walks_through_the_data_across_epochs():
    x = np.arange(8, dtype="float32").reshape(8, 1)
    y = np.zeros(8, dtype="int64")
    seen: list[list[float]] = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 2)

        def forward(self, inp):
            seen.append(inp[:, 0].tolist())
            return self.lin(inp)

    model = mirrorfit.Model(Spy())
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=2, steps_per_epoch=2, epochs=3, shuffle=False, verbose=0)
    assert seen == [[0, 1], [2, 3], [4, 5], [6, 7], [0, 1], [2, 3]]


def test_hooks_set_on_the_instance_and_batch_aliases_are_called():
    calls = []
    cb = mirrorfit.callbacks.Callback()
    cb.on_epoch_end = lambda epoch, logs=None: calls.append(("epoch", epoch))

    class Old(mirrorfit.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append(("batch", batch))

    x, y = _data(32)
    _model().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb, Old()])
    assert calls == [("batch", 0), ("batch", 1), ("epoch", 0)]


def test_validation_hooks_get_unprefixed_logs_and_history_gets_val_keys():
    got = []

    class Spy(mirrorfit.callbacks.Callback):
        def on_test_end(self, logs=None):
            got.append(sorted(logs))

    x, y = _data(32)
    hist = _model().fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[Spy()])
    assert got == [["accuracy", "loss"]]
    assert {"val_loss", "val_accuracy"} <= set(hist.history)


def test_a_user_progbar_is_not_doubled(capsys):
    x, y = _data(32)
    _model().fit(x, y, epochs=1, verbose=1, callbacks=[mirrorfit.callbacks.ProgbarLogger(2)])
    assert capsys.readouterr().out.count("Epoch 1/1") == 1


def test_validation_split_keeps_sample_weight_apart_from_y():
    x, _ = _data(8)
    with pytest.raises(ValueError, match="sample_weight needs y"):
        _model().fit(x, None, sample_weight=np.ones(8, "float32"), validation_split=0.5,
                     verbose=0)


def _trained_after_set_seed(seed):
    mirrorfit.set_seed(seed)
    model = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(),
                                                torch.nn.Linear(8, 2)))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(96)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # no seed: shuffled from set_seed's
    first = model.training_context.trainer.seed
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model.get_weights(), first, model.training_context.trainer.seed


def test_set_seed_makes_fit_without_a_seed_repeat_exactly():
    (w1, a1, b1), (w2, a2, b2) = _trained_after_set_seed(3), _trained_after_set_seed(3)
    assert (a1, b1) == (a2, b2) and a1 != b1  # the same draws; successive fits differ
    assert all(np.array_equal(p, q) for p, q in zip(w1, w2, strict=True))
    _, a3, _ = _trained_after_set_seed(4)
    assert a3 != a1
