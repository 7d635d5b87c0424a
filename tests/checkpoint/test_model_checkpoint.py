"""ModelCheckpoint: Keras's file names, rotation, save_best_only, step-level saves."""

from __future__ import annotations

import pytest
import torch

import mirrorfit
from mirrorfit.callbacks import ModelCheckpoint
from mirrorfit.checkpoint import load_checkpoint
from tests.checkpoint.helpers import build, data, same_weights


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_file_names_follow_keras_formatting(tmp_path):
    x, y = data()
    model = build()
    cb = ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.pt")
    hist = model.fit(x, y, batch_size=30, epochs=3, validation_data=(x[:20], y[:20]),
                     callbacks=[cb], verbose=0)
    expected = [f"ckpt-{e + 1:02d}-{v:.2f}.pt" for e, v in enumerate(hist.history["val_loss"])]
    assert _names(tmp_path) == sorted(expected)
    last = mirrorfit.load_model(tmp_path / expected[-1], module=build().module)
    assert same_weights(last, model)


def test_format_path_fields_and_missing_key_message():
    cb = ModelCheckpoint("m-{epoch:03d}-{batch}-{loss:.3f}.pt")
    assert cb.format_path(0, 4, {"loss": 0.12345}) == "m-001-5-0.123.pt"
    with pytest.raises(KeyError, match=r"names 'loss', which is not available here; "
                                       r"available: \['batch', 'epoch'\]"):
        cb.format_path(2, 1, {})


def test_keep_rotates_the_oldest_files_away(tmp_path):
    x, y = data()
    cb = ModelCheckpoint(tmp_path / "m-{epoch}.pt", keep=2)
    build().fit(x, y, batch_size=30, epochs=5, callbacks=[cb], verbose=0)
    assert _names(tmp_path) == ["m-4.pt", "m-5.pt"]
    assert cb.saved == [str(tmp_path / "m-4.pt"), str(tmp_path / "m-5.pt")]


def test_save_best_only_writes_on_improvement_only(tmp_path):
    model = build()
    cb = ModelCheckpoint(tmp_path / "best-{epoch}.pt", save_best_only=True)
    cb.set_model(model)
    for epoch, val_loss in enumerate([1.0, 0.5, 0.7, 0.4, 0.4]):
        cb.on_epoch_end(epoch, {"val_loss": val_loss})
    assert _names(tmp_path) == ["best-1.pt", "best-2.pt", "best-4.pt"]
    assert cb.best == 0.4


def test_auto_mode_maximises_accuracy_and_warns_without_the_key(tmp_path):
    model = build()
    cb = ModelCheckpoint(tmp_path / "b-{epoch}.pt", monitor="val_accuracy",
                         save_best_only=True)
    cb.set_model(model)
    assert cb.mode == "max"
    for epoch, acc in enumerate([0.5, 0.4, 0.9]):
        cb.on_epoch_end(epoch, {"val_accuracy": acc})
    with pytest.warns(UserWarning, match=r"needs 'val_accuracy' in the logs, which hold "
                                         r"\['loss'\]"):
        cb.on_epoch_end(3, {"loss": 1.0})
    assert _names(tmp_path) == ["b-1.pt", "b-3.pt"]


def test_step_level_saves_name_epoch_and_batch(tmp_path):
    x, y = data()  # 90 samples, batch 10: 9 steps per epoch, 18 in all
    cb = ModelCheckpoint(tmp_path / "s-{epoch}-{batch}.pt", save_freq=4, save_weights_only=True)
    build().fit(x, y, batch_size=10, epochs=2, callbacks=[cb], verbose=0)
    assert _names(tmp_path) == ["s-1-4.pt", "s-1-8.pt", "s-2-3.pt", "s-2-7.pt"]
    data_ = load_checkpoint(tmp_path / "s-2-7.pt", ["weights"])
    assert data_["mirrorfit"]["kind"] == "weights" and set(data_) == {"mirrorfit", "module"}


def test_step_level_save_best_only_asks_for_batch_logs(tmp_path):
    cb = ModelCheckpoint(tmp_path / "s.pt", monitor="loss", save_freq=3, save_best_only=True)
    assert cb.batch_logs
    assert not ModelCheckpoint(tmp_path / "s-{epoch}-{batch}.pt", save_freq=3).batch_logs
    x, y = data()
    build().fit(x, y, batch_size=10, epochs=1, callbacks=[cb], verbose=0)
    assert (tmp_path / "s.pt").exists() and cb.best < float("inf")


def test_async_save_writes_the_same_state(tmp_path):
    x, y = data()
    files = {}
    for flag in (False, True):
        cb = ModelCheckpoint(tmp_path / f"{flag}.pt", async_save=flag)
        build().fit(x, y, batch_size=30, epochs=2, callbacks=[cb], verbose=0, seed=3)
        files[flag] = load_checkpoint(tmp_path / f"{flag}.pt", ["model"])
    for key in ("module",):
        for name, t in files[False][key].items():
            assert torch.equal(t, files[True][key][name])
    assert files[False]["optimizer"]["state"][0]["exp_avg"].equal(
        files[True]["optimizer"]["state"][0]["exp_avg"])


@pytest.mark.parametrize("kwargs, match", [
    ({"save_freq": 0}, "save_freq must be 'epoch' or a positive number of steps; received 0"),
    ({"save_freq": "batch"}, "received 'batch'"),
    ({"keep": 0}, "keep must be None or a positive integer; received 0"),
    ({"mode": "up"}, "mode must be 'auto', 'min' or 'max'; received 'up'"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelCheckpoint("x.pt", **kwargs)
