"""TerminateOnNaN: a NaN loss on one rank stops every rank at the same step, the
chief prints where, the job exits normally, and the checkpoint written before the
NaN is still there and loadable. Without it, a NaN on one rank's inputs trains on,
and the chief warns once."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import mirrorfit
from tests.faults import jobs
from tests.faults.helpers import assert_workers_gone, run_job

pytestmark = pytest.mark.multiprocess

NAN_STEP = 38  # rank 1's 38th training step: epoch 3 (index 2), batch 5 of 16


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, fault_table):
    tmp = tmp_path_factory.mktemp("nan")
    out = run_job(tmp, jobs.NAN, str(tmp), str(NAN_STEP))
    ends = [line for line in out.lines() if "stopped_at" in line]
    fault_table.add("NaN loss on rank 1 (TerminateOnNaN)", out,
                    next((ln for ln in out.result.stdout.splitlines() if "invalid loss" in ln),
                         "(no message)"))
    return out, ends, tmp


def test_every_rank_stops_at_the_step_of_the_nan(nan_run):
    out, ends, _ = nan_run
    assert out.result.returncode == 0, out.stderr[-3000:]
    assert_workers_gone(out)
    assert sorted(e["rank"] for e in ends) == [0, 1]
    for e in ends:
        assert e["stopped_at"] == [2, 5]
        assert e["epochs_run"] == 3  # the third epoch ended early, no fourth one ran
    assert out.result.stdout.count("Epoch 3, batch 5: invalid loss nan, terminating training.") == 1
    assert "the training loss is" not in out.result.stdout + out.stderr  # no second message


class _Net(torch.nn.Module):  # the job's architecture, without its NaN injection
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)


def _load(path: Path) -> torch.nn.Module:
    return mirrorfit.load_model(path, module=_Net(), compile=False).module


def _finite(module: torch.nn.Module) -> bool:
    return all(math.isfinite(v) for p in module.parameters() for v in p.flatten().tolist())


def test_the_checkpoint_written_before_the_nan_is_kept_and_loadable(nan_run):
    _, ends, tmp = nan_run
    if not ends[0]["has_checkpoint_callback"]:
        pytest.skip("no ModelCheckpoint yet: nothing to keep")
    assert _finite(_load(tmp / "epoch-2.pt"))
    assert not (tmp / "epoch-3.pt").exists()  # a NaN epoch writes no checkpoint


def test_a_constant_path_checkpoint_still_holds_the_last_good_weights(nan_run):
    _, ends, tmp = nan_run
    if not ends[0]["has_checkpoint_callback"]:
        pytest.skip("no ModelCheckpoint yet: nothing to keep")
    assert _finite(_load(tmp / "last.pt"))


WARNING = "the training loss is nan at epoch 3, batch 15"


@pytest.fixture(scope="module")
def nan_warn_run(tmp_path_factory, fault_table):
    tmp = tmp_path_factory.mktemp("nan-warn")
    out = run_job(tmp, jobs.NAN_WARN, str(NAN_STEP))
    combined = out.result.stdout + out.stderr
    fault_table.add("NaN input on rank 1, no TerminateOnNaN", out,
                    next((ln for ln in combined.splitlines() if "training loss is" in ln),
                         "(no warning)"))
    return out, combined


def test_without_terminate_on_nan_the_chief_warns_once(nan_warn_run):
    out, combined = nan_warn_run
    assert out.result.returncode == 0, out.stderr[-3000:]
    assert_workers_gone(out)
    ends = [line for line in out.lines() if "losses" in line]
    assert sorted(e["rank"] for e in ends) == [0, 1]
    for e in ends:  # training went on: what the warning is about
        assert all(math.isfinite(v) for v in e["losses"][:2]) and math.isnan(e["losses"][2])
        assert not e["finite_weights"]
    # the NaN was in epoch 3's batch 5; without batch logs the loss is read at the epoch's end
    assert combined.count("the training loss is") == 1, combined[-4000:]
    assert WARNING in combined
    assert "between batch 0 and batch 15" in combined
    assert "TerminateOnNaN()" in combined and "lower learning rate" in combined
    assert "check the inputs for NaN or inf" in combined
    assert "RuntimeWarning" in combined and "job.py:" in combined  # at the user's fit line
