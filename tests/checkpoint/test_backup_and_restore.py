"""BackupAndRestore in one process: interrupted at step k, resumed bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mirrorfit.callbacks import BackupAndRestore, Callback, ModelCheckpoint
from mirrorfit.checkpoint import CorruptCheckpointError, load_checkpoint, rng, save_checkpoint
from tests.checkpoint.helpers import build, data, digest, same_weights

EPOCHS, BATCH = 3, 20  # 90 samples: 5 steps per epoch (the last one of 10)


class Interrupt(Exception):
    pass


class StopAt(Callback):
    """Raises after global step ``step`` (1-based), like a crash there."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.done = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            raise Interrupt(f"interrupted after step {self.step}")


def _fit(callbacks, steps_per_update=1, dropout=0.2):
    x, y = data()
    model = build(dropout=dropout)
    if steps_per_update > 1:
        model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"],
                      steps_per_update=steps_per_update)
    hist = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, seed=5,
                     validation_data=(x[:30], y[:30]), callbacks=[*callbacks])
    return model, hist


@pytest.fixture(scope="module")
def reference():
    return _fit([])


@pytest.mark.parametrize("save_freq, stop", [(3, 7), (2, 1), (4, 15), ("epoch", 8), (1, 14)])
def test_interrupted_run_resumes_bit_for_bit(tmp_path, reference, save_freq, stop):
    ref_model, ref_hist = reference
    backup = tmp_path / "backup"
    with pytest.raises(Interrupt):
        _fit([StopAt(stop), BackupAndRestore(backup, save_freq=save_freq)])
    model, hist = _fit([BackupAndRestore(backup, save_freq=save_freq)])
    assert same_weights(model, ref_model)
    assert hist.epoch == [0, 1, 2]
    assert hist.history["accuracy"] == ref_hist.history["accuracy"]
    assert hist.history["val_loss"] == ref_hist.history["val_loss"]
    np.testing.assert_allclose(hist.history["loss"], ref_hist.history["loss"], rtol=1e-12)
    assert not backup.exists()  # delete_checkpoint=True removed it at the end


def test_gradient_accumulation_backs_up_at_update_boundaries(tmp_path):
    ref_model, _ = _fit([], steps_per_update=2)
    backup = tmp_path / "b"
    with pytest.raises(Interrupt):  # save_freq=3 -> saves after steps 4 (not 3), 8 ...
        _fit([StopAt(6), BackupAndRestore(backup, save_freq=3)], steps_per_update=2)
    assert load_checkpoint(backup / "backup.pt", ["backup"])["position"] == {"epoch": 0,
                                                                             "step": 4}
    model, _ = _fit([BackupAndRestore(backup, save_freq=3)], steps_per_update=2)
    assert same_weights(model, ref_model)


def test_backup_holds_every_piece_of_state(tmp_path):
    backup = tmp_path / "b"
    checkpoint = ModelCheckpoint(tmp_path / "m.pt", monitor="loss", save_best_only=True)
    with pytest.raises(Interrupt):
        _fit([checkpoint, StopAt(13), BackupAndRestore(backup, save_freq=2)])
    state = load_checkpoint(backup / "backup.pt", ["backup"])
    assert state["position"] == {"epoch": 2, "step": 2} and state["replicas"] == 1
    trainer = state["model"]["trainer"]
    assert trainer["seed"] == 5 and trainer["stream"]["batch_size"] == BATCH
    assert trainer["tracker"]["loss"][1] == 40  # samples seen so far in the epoch
    assert set(state["model"]["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert state["callbacks"]["History"]["epoch"] == [0, 1]
    assert state["callbacks"]["ModelCheckpoint"]["best"] == checkpoint.best
    assert set(state["rng"][0]) == {"python", "numpy", "torch"}


def test_keep_backup_when_asked_and_nothing_left_to_do(tmp_path):
    backup = tmp_path / "b"
    model, _ = _fit([BackupAndRestore(backup, delete_checkpoint=False)])
    saved = load_checkpoint(backup / "backup.pt", ["backup"])
    assert saved["position"] == {"epoch": EPOCHS, "step": 0}
    again, hist = _fit([BackupAndRestore(backup, delete_checkpoint=False)])
    assert same_weights(again, model) and hist.epoch == [0, 1, 2]


def test_async_backup_resumes_bit_for_bit(tmp_path, reference):
    backup = tmp_path / "b"
    with pytest.raises(Interrupt):
        _fit([StopAt(9), BackupAndRestore(backup, save_freq=2, async_save=True)])
    model, _ = _fit([BackupAndRestore(backup, save_freq=2, async_save=True)])
    assert same_weights(model, reference[0])


def test_corrupt_backup_stops_with_a_clear_error_and_stays(tmp_path):
    backup = tmp_path / "b"
    backup.mkdir()
    (backup / "backup.pt").write_bytes(b"PK\x03\x04truncated")
    before = digest(backup / "backup.pt")
    with pytest.raises(CorruptCheckpointError, match=r"backup\.pt"):
        _fit([BackupAndRestore(backup)])
    assert digest(backup / "backup.pt") == before


def test_rng_states_survive_weights_only_files(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.normal(), torch.randn(2)  # numpy caches a gaussian
    save_checkpoint({"rng": rng.capture()}, tmp_path / "r.pt", "backup")
    expected = random.random(), np.random.normal(), torch.randn(3)
    rng.restore(load_checkpoint(tmp_path / "r.pt", ["backup"])["rng"])
    got = random.random(), np.random.normal(), torch.randn(3)
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_bad_save_freq_is_named():
    with pytest.raises(ValueError, match="received 'batch'"):
        BackupAndRestore("b", save_freq="batch")
