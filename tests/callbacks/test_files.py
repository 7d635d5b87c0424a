"""CSVLogger and TensorBoard files in one process, and every stateful callback
resumed by BackupAndRestore after an interruption (a raise at step k, as a crash):
the files and decisions equal an uninterrupted run's, wherever BackupAndRestore
sits in the list."""

from __future__ import annotations

import time

import pytest
import torch

from mirrorfit.callbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    LearningRateWarmup,
    ReduceLROnPlateau,
    TensorBoard,
)
from tests.callbacks.helpers import build, data, f32, scalars

STEPS = 5  # 90 samples, batch 20


class Interrupt(Exception):
    pass


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step, self.done = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            raise Interrupt(f"interrupted after step {self.step}")


def _callbacks(tmp, model):
    sched = torch.optim.lr_scheduler.ExponentialLR(model.optimizer, gamma=0.8)
    return [EarlyStopping("val_loss", min_delta=0.003, patience=2, restore_best_weights=True),
            ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=0.02),
            LearningRateScheduler(sched), LearningRateWarmup(0.05, warmup_steps=7),
            CSVLogger(tmp / "log.csv"), TensorBoard(tmp / "tb", update_freq=2)]


def _fit(tmp, extra=(), backup_first=False, save_freq=3):
    x, y = data()
    model = build(lr=0.05)
    cbs = _callbacks(tmp, model)
    backup = [BackupAndRestore(tmp / "backup", save_freq=save_freq)]
    cbs = [*extra, *backup, *cbs] if backup_first else [*extra, *cbs, *backup]
    hist = model.fit(x, y, batch_size=20, epochs=12, verbose=0, seed=3,
                     validation_data=(x[:40], y[:40]), callbacks=cbs)
    return model, hist


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    model, hist = _fit(tmp)
    return tmp, model, hist


@pytest.mark.parametrize("stop, backup_first, save_freq", [
    (12, False, 3),        # backup at step 9 (epoch 1), epoch 1's row written at step 10
    (23, True, 3),         # BackupAndRestore first in the list
    (16, False, "epoch"),  # a backup at each epoch boundary
])
def test_interrupted_run_resumes_to_the_same_files_and_decisions(tmp_path, reference, stop,
                                                                 backup_first, save_freq):
    ref_tmp, ref_model, ref_hist = reference
    assert len(ref_hist.epoch) < 12 and stop < STEPS * len(ref_hist.epoch)  # stopped early
    with pytest.raises(Interrupt):
        _fit(tmp_path, [StopAt(stop)], backup_first, save_freq)
    # TensorBoard reads a run's event files in name order, and names start with the
    # second they were created: a real restart takes seconds, this one would not
    time.sleep(1.1)
    model, hist = _fit(tmp_path, (), backup_first, save_freq)
    assert hist.history == ref_hist.history and hist.epoch == ref_hist.epoch
    assert (tmp_path / "log.csv").read_bytes() == (ref_tmp / "log.csv").read_bytes()
    for run in ("train", "validation", "batch"):
        assert scalars(tmp_path / "tb" / run) == scalars(ref_tmp / "tb" / run), run
    assert all(torch.equal(a, b) for a, b in zip(model.module.state_dict().values(),
                                                 ref_model.module.state_dict().values(),
                                                 strict=True))


def test_reference_run_files(reference):
    tmp, _, hist = reference
    rows = (tmp / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"
    assert len(rows) == len(hist.epoch) + 1
    lrs = hist.history["learning_rate"]
    # the rate each epoch starts with: the warmup's last (step 4 of 7) times gamma, then
    # the warmup's target times gamma once the warmup is over
    assert lrs[:4] == pytest.approx([0.05, 0.05 * 5 / 7 * 0.8, 0.05 * 0.8, 0.05 * 0.8 ** 2])
    train = scalars(tmp / "tb" / "train")
    assert train["epoch_loss"] == list(zip(hist.epoch, f32(hist.history["loss"]), strict=True))


def test_csv_logger_appends_and_leaves_na_until_validation_runs(tmp_path):
    x, y = data()
    model = build()
    path = tmp_path / "sub" / "log.csv"
    model.fit(x, y, batch_size=30, epochs=2, verbose=0, validation_data=(x, y),
              validation_freq=2, callbacks=[CSVLogger(path, separator=";")])
    model.fit(x, y, batch_size=30, epochs=1, verbose=0,
              callbacks=[CSVLogger(path, separator=";", append=True)])
    rows = [r.split(";") for r in path.read_text().splitlines()]
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert rows[1][3:] == ["NA", "NA"] and "NA" not in rows[2]
    assert [r[0] for r in rows[1:]] == ["0", "1", "0"] and rows[3][3:] == ["NA", "NA"]
    with pytest.raises(ValueError, match="separator must be one character; received ', '"):
        CSVLogger(path, separator=", ")


def test_csv_logger_names_an_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    x, y = data()
    with pytest.raises(OSError, match="file"):
        build().fit(x, y, epochs=1, verbose=0, callbacks=[CSVLogger(blocker / "log.csv")])


def test_tensorboard_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="update_freq must be 'epoch' or a positive number of "
                                         "steps; received 'batch'"):
        TensorBoard(tmp_path, update_freq="batch")
    with pytest.raises(ValueError, match="histogram_freq must be an integer >= 0"):
        TensorBoard(tmp_path, histogram_freq=-1)


def test_tensorboard_writes_the_graph_without_touching_training(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    x, y = data()
    plain = build()
    plain.fit(x, y, batch_size=30, epochs=1, verbose=0, seed=1)
    traced = build()
    traced.fit(x, y, batch_size=30, epochs=1, verbose=0, seed=1,
               callbacks=[TensorBoard(tmp_path, write_graph=True)])
    acc = EventAccumulator(str(tmp_path / "train"))
    acc.Reload()
    assert acc.Tags()["graph"]
    assert all(torch.equal(a, b) for a, b in zip(plain.module.state_dict().values(),
                                                 traced.module.state_dict().values(),
                                                 strict=True))
