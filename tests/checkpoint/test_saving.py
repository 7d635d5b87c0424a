"""Model.save / load_model / restore_or_create / Model.state_dict."""

from __future__ import annotations

import pytest
import torch

import mirrorfit
from mirrorfit.callbacks import ModelCheckpoint
from mirrorfit.saving import latest_checkpoint
from tests.checkpoint.helpers import build, data, same_weights


def test_save_and_load_model_restore_weights_optimizer_and_compile(tmp_path):
    x, y = data()
    model = build()
    model.fit(x, y, batch_size=30, epochs=2, verbose=0, seed=1)
    model.save(tmp_path / "m.pt")
    loaded = mirrorfit.load_model(tmp_path / "m.pt", module=build().module)
    assert same_weights(loaded, model)
    assert type(loaded.optimizer).__name__ == "Adam"
    # training on continues identically: the optimizer state came back too
    model.fit(x, y, batch_size=30, epochs=1, verbose=0, seed=2)
    loaded.fit(x, y, batch_size=30, epochs=1, verbose=0, seed=2)
    assert same_weights(loaded, model)
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)


def test_load_model_needs_the_architecture(tmp_path):
    build().save(tmp_path / "m.pt")
    with pytest.raises(TypeError, match=r"needs module=.*received NoneType.*weights_only=True"):
        mirrorfit.load_model(tmp_path / "m.pt")


def test_objects_in_compile_come_back_compiled(tmp_path):
    model = build()
    model.compile("adam", mirrorfit.losses.MeanSquaredError())
    model.save(tmp_path / "m.pt")
    loaded = mirrorfit.load_model(tmp_path / "m.pt", module=build().module)
    assert same_weights(loaded, model)
    assert type(loaded.optimizer).__name__ == "Adam"
    assert isinstance(loaded._trainer.steps.loss_fn, mirrorfit.losses.MeanSquaredError)


def test_weights_round_trip(tmp_path):
    model = build()
    model.save_weights(tmp_path / "w.pt")
    other = build(optimizer="sgd")
    with torch.no_grad():
        for p in other.module.parameters():
            p.add_(1.0)
    other.load_weights(tmp_path / "w.pt")
    assert same_weights(other, model)


def test_restore_or_create_is_keras_make_or_restore_model(tmp_path, capsys):
    calls = []

    def build_fn():
        calls.append(1)
        return build()

    fresh = mirrorfit.restore_or_create(tmp_path / "ckpt", build_fn)
    assert same_weights(fresh, build()) and len(calls) == 1
    assert capsys.readouterr().out == "Creating a new model\n"  # as the Keras guide
    x, y = data()
    trained = build()
    trained.fit(x, y, batch_size=30, epochs=3, verbose=0, seed=1,
                callbacks=[ModelCheckpoint(tmp_path / "ckpt" / "m-{epoch}.pt")])
    (tmp_path / "ckpt" / ".m-9.pt.tmp-1-x").write_bytes(b"stale")  # skipped: hidden
    assert latest_checkpoint(tmp_path / "ckpt").name == "m-3.pt"
    capsys.readouterr()
    restored = mirrorfit.restore_or_create(tmp_path / "ckpt", build_fn)
    assert same_weights(restored, trained)
    assert capsys.readouterr().out == f"Restoring from {tmp_path / 'ckpt' / 'm-3.pt'}\n"
    with pytest.raises(TypeError, match=r"must return a mirrorfit\.Model; it returned Module"):
        mirrorfit.restore_or_create(tmp_path, lambda: torch.nn.Module())


def test_model_state_dict_round_trip_includes_position():
    x, y = data()
    model = build()
    model.fit(x, y, batch_size=30, epochs=2, verbose=0, seed=1)
    state = model.state_dict()
    assert set(state) == {"module", "optimizer", "precision", "trainer"}
    assert state["trainer"]["epoch"] == 2 and state["trainer"]["seed"] == 1
    other = build()
    other.load_state_dict(state)
    assert same_weights(other, model)
    assert other.training_context.epoch == 2
