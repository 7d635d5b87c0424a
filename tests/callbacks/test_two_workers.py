"""Every callback in real 2-worker runs: the same decisions on every replica, files
written by the chief only, and a run killed twice (SIGKILL, restarted by torch
elastic, resumed by BackupAndRestore) that ends exactly as an uninterrupted one:
same stopping epoch, learning rates, CSV bytes, TensorBoard scalars and weights.

Two launches: the reference, and the killed run (kills chosen so that each
restart resumes from a backup taken *before* a CSV row and TensorBoard events
were written, which must then be cut off and written again once)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tests.callbacks.helpers import f32, histogram_steps, scalars
from tests.callbacks.jobs import JOB
from tests.procs import run_python, write_script

pytestmark = pytest.mark.multiprocess

STEPS = 11  # 203 samples, global batch 20
# attempt 0: rank 1 dies after step 12 (backup at 8, epoch 0's row written at 11);
# attempt 1: the chief dies after step 45 (backup at 44, epoch 3's row written after it)
KILLS = [{"attempt": 0, "rank": 1, "step": 12}, {"attempt": 1, "rank": 0, "step": 45}]


def _run(tmp, label, **cfg):
    out = tmp / label
    out.mkdir()
    script = write_script(tmp, JOB)
    res = run_python(script, json.dumps({"devices": 2, "dir": str(out), **cfg}), timeout=240)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    lines = sorted(res.json_lines(), key=lambda line: line["rank"])
    return res, out, lines


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cb"), "ref")


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("cb"), "killed", kills=KILLS, max_restarts=2)


def test_replicas_take_the_same_decisions_in_the_same_epoch(reference):
    res, _, (chief, other) = reference
    assert [chief["rank"], other["rank"]] == [0, 1]
    for key in ("history", "epochs", "stopped_epoch", "best_epoch", "lr", "batch_logs"):
        assert chief[key] == other[key], key
    # EarlyStopping stopped before the 12 epochs, after the second kill point (epoch 4)
    assert 4 < chief["stopped_epoch"] < 11 and chief["epochs"][-1] == chief["stopped_epoch"]
    lrs = chief["history"]["learning_rate"]
    # the schedule multiplies by 0.9 on the chief and 0.5 elsewhere: the chief's value won
    assert lrs[0] == pytest.approx(0.05 * 0.9, rel=1e-12)
    # ReduceLROnPlateau halved the rate at least once on top of the schedule
    assert any(b < a * 0.9 * 0.9 for a, b in itertools.pairwise(lrs))
    assert chief["batch_logs"] == STEPS * len(chief["epochs"])  # LambdaCallback got batch logs
    # messages and the summary table: printed once (by the chief)
    printed = [line for line in res.stdout.splitlines() if not line.startswith("JSON ")]
    assert printed.count(f"Epoch {chief['stopped_epoch'] + 1}: early stopping") == 1
    assert sum("ReduceLROnPlateau reducing learning rate" in line for line in printed) >= 1
    assert printed.count("Total params: 163 (652.00 B)") == 1
    assert " 0 (Linear)      (None, 16)          112" in chief["summary"]
    timing = [line for line in printed if line.startswith("Per step, ")]
    assert len(timing) == 1 and timing[0].startswith(
        f"Per step, 2 replicas, {STEPS * len(chief['epochs'])} steps: ")
    assert "waiting for the other replicas" in timing[0]


def test_files_are_written_by_the_chief_only(reference):
    _, out, (chief, _) = reference
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"
    assert [int(r.split(",")[0]) for r in rows[1:]] == chief["epochs"]
    for run in ("train", "validation", "batch"):  # one writer: one event file per run
        assert len(list((out / "tb" / run).glob("events.out.tfevents.*"))) == 1, run
    assert not (out / "backup").exists()


def test_tensorboard_scalars_are_the_history(reference):
    _, out, (chief, _) = reference
    hist, epochs = chief["history"], chief["epochs"]
    train, val = scalars(out / "tb" / "train"), scalars(out / "tb" / "validation")
    assert sorted(train) == ["epoch_accuracy", "epoch_learning_rate", "epoch_loss"]
    for key in ("loss", "accuracy", "learning_rate"):
        assert train[f"epoch_{key}"] == list(zip(epochs, f32(hist[key]), strict=True)), key
    for key in ("loss", "accuracy"):
        assert val[f"epoch_{key}"] == list(zip(epochs, f32(hist[f"val_{key}"]), strict=True))
    batch = scalars(out / "tb" / "batch")
    assert [s for s, _ in batch["batch_loss"]] == list(range(3, STEPS * len(epochs) + 1, 3))
    # the running loss after the last step of epoch 0 (step 11) is not written (11 % 3),
    # but step 33 is epoch 2's last: its running mean is that epoch's loss
    assert dict(batch["batch_loss"])[33] == pytest.approx(hist["loss"][2], rel=1e-6)
    hists = histogram_steps(out / "tb" / "train")
    assert sorted(hists) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert hists["0.weight"] == [e for e in epochs if (e + 1) % 2 == 0]


def test_killed_and_restarted_run_ends_as_the_uninterrupted_one(reference, killed):
    _, ref_out, (ref, _) = reference
    res, out, (chief, other) = killed
    assert res.stdout.count("mirrorfit: resuming from") == 2, res.stdout[-3000:]
    assert chief["attempt"] == 2 and chief == {**other, "rank": 0}
    for key in ("history", "epochs", "stopped_epoch", "best_epoch", "lr"):
        assert chief[key] == ref[key], key
    # the CSV rows written after each backup were cut off and written once again
    assert (out / "log.csv").read_bytes() == (ref_out / "log.csv").read_bytes()
    # restore_best_weights: the same best epoch's weights, bit for bit
    with np.load(out / "weights.npz") as a, np.load(ref_out / "weights.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
    # TensorBoard discards what the killed attempts wrote after their backup
    for run in ("train", "validation", "batch"):
        assert len(list((out / "tb" / run).glob("events.out.tfevents.*"))) == 3, run
        assert scalars(out / "tb" / run) == scalars(ref_out / "tb" / run), run
    assert histogram_steps(out / "tb" / "train") == histogram_steps(ref_out / "tb" / "train")
