"""ShardedStrategy with real gloo workers, beyond the contract suite (which checks the
weights, evaluation and predictions against one device): gradient accumulation
without a reduce-scatter per micro-step, sharded parameters, BackupAndRestore's
checkpoint folders resumed at the exact step on 2, 1 and 4 replicas, whole weights
on every rank, and a consolidated file read on one device.

ModelCheckpoint writes folders too; ``load_model`` and ``restore_or_create`` read
them whole on any replica count. Two launches (2 workers, then 1 process); the
4-worker resume is marked slow."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mirrorfit.checkpoint.sharded import is_sharded
from tests.procs import REPO, clean_env, run_python, write_script
from tests.strategies import sharded_jobs
from tests.strategies.arrays import assert_close, saved_arrays

pytestmark = pytest.mark.multiprocess


def _env() -> dict[str, str]:
    return clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    train = write_script(tmp, sharded_jobs.TRAIN, "train.py")
    resume = write_script(tmp, sharded_jobs.RESUME, "resume.py")
    out = tmp / "out"
    out.mkdir()
    lines = {}
    for name, script, n in (("train", train, 2), ("resume1", resume, 1)):
        res = run_python(script, str(n), str(out), env=_env(), timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        lines[name] = sorted(res.json_lines(), key=lambda r: r["rank"])
        lines[name + "/stdout"] = res.stdout
    return out, lines, resume


def test_modules_fsdp2_cannot_shard_are_refused_on_every_rank_before_sharding(runs):
    _, lines, _ = runs
    assert len(lines["train"]) == 2
    for line in lines["train"]:
        refused = line["refused"]
        assert refused["tied"].startswith(
            "ValueError: '0.weight' and '2.weight' are one parameter (tied weights) in "
            "different FSDP units ('0', '2')")
        assert "e.g. wrap=[] (the whole model is one unit)" in refused["tied"]
        assert refused["fsdp1"].startswith(
            "TypeError: The model (FullyShardedDataParallel) is already wrapped by "
            "FullyShardedDataParallel (FSDP1); ShardedStrategy shards the plain module itself")
        assert refused["lazy"].startswith(
            "ValueError: '0.weight' (LazyLinear at '0') is not initialized yet")
        # nothing sharded (the FSDP1 module is the caller's own wrapper), nothing written
        assert not refused["tied sharded"] and not refused["lazy sharded"]
        assert line["files after refusals"] == []


def test_parameters_are_sharded_and_accumulation_skips_the_reduce_scatter(runs):
    _, lines, _ = runs
    for line in lines["train"]:
        assert line["param_types"] == ["DTensor"]
        assert line["local_numel"] < line["total_numel"]  # each rank holds about half
        # steps_per_update=2: after micro-step 0 no shard has a gradient (FSDP2 kept the
        # unsharded ones); the update's backward reduce-scatters, then zero_grad clears
        assert line["grads_after_micro_steps"] == [False] * 5
    assert sum(line["local_numel"] for line in lines["train"]) == lines["train"][0]["total_numel"]


def test_backups_are_checkpoint_folders_resumed_at_the_exact_step_on_2_and_1(runs):
    out, lines, _ = runs
    assert all(line["backup_is_folder"] for line in lines["train"])
    assert not any(line["backup_left"] for line in lines["train"])  # deleted at the end
    assert "at epoch 2, step 1 (saved by 2 worker(s), now 2)" in lines["train/stdout"]
    assert "at epoch 2, step 1 (saved by 2 worker(s), now 1)" in lines["resume1/stdout"]
    reference = saved_arrays(out, "reference")
    assert_close(saved_arrays(out, "resumed"), reference)
    assert_close(saved_arrays(out, "resumed1"), reference)


def test_an_empty_share_trains_like_one_device(runs):
    out, _, _ = runs
    assert_close(saved_arrays(out, "tail"), saved_arrays(out, "tail_reference"))


def test_get_weights_is_whole_on_every_rank(runs):
    out, _, _ = runs
    rank0, rank1 = saved_arrays(out, "stopped", 0), saved_arrays(out, "stopped", 1)
    assert [w.shape for w in rank0] == [(16, 6), (16,), (3, 16), (3,)]
    for a, b in zip(rank0, rank1, strict=True):
        assert np.array_equal(a, b)


def test_consolidated_files_load_on_one_device(runs):
    out, lines, _ = runs
    assert_close(saved_arrays(out, "loaded"), saved_arrays(out, "stopped"), atol=0)
    # predict and evaluate with an empty share (the last batch holds 1 sample): the same
    # outputs, in input order, and the same exact metrics as the loaded copy on one device
    assert_close(saved_arrays(out, "loaded_pred"), saved_arrays(out, "pred"), atol=1e-6)
    one = lines["resume1"][0]["eval_tail"]
    for line in lines["train"]:
        assert line["eval_tail"]["accuracy"] == one["accuracy"]
        assert line["eval_tail"]["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert lines["resume1"][0]["loaded_optimizer_state"] == 4  # Adam's state, whole


def test_model_checkpoints_are_folders_that_load_anywhere(runs):
    out, lines, _ = runs
    assert lines["train"][0]["checkpoints"] == ["model-1.pt"]  # epoch 2 was interrupted
    assert is_sharded(out / "mc" / "model-1.pt")
    epoch1 = saved_arrays(out, "epoch1")
    assert_close(saved_arrays(out, "checkpoint1"), epoch1, atol=0)  # load_model on one device
    assert_close(saved_arrays(out, "restored1"), epoch1, atol=0)  # restore_or_create, sharded
    assert lines["resume1"][0]["restored_optimizer_state"] == 4


def test_mixed_precision_gathers_low_precision_parameters_and_agrees_on_skips(runs):
    out, lines, _ = runs
    reference = lines["resume1"][0]["reference_mixed"]
    assert reference["bf16_weight_in_forward"] == "torch.float32"  # autocast, one device
    for line in lines["train"]:
        # FSDP2's MixedPrecisionPolicy: the gathered parameters are bfloat16
        assert line["bf16_weight_in_forward"] == "torch.bfloat16"
        # the overflow (rank 1's share) skips the step on every rank: the same scales
        assert line["fp16_scales"] == reference["fp16_scales"]
        assert line["fp16_scales"][0] == 32768.0  # halved from 65536 at the first step
    assert_close(saved_arrays(out, "fp16"), saved_arrays(out, "fp16_reference"), atol=1e-3)


@pytest.mark.slow
def test_resume_on_4_replicas(runs):
    out, _, resume = runs
    res = run_python(resume, "4", str(out), env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(saved by 2 worker(s), now 4)" in res.stdout
    assert_close(saved_arrays(out, "resumed4"), saved_arrays(out, "reference"))
    for rank in range(4):  # a ModelCheckpoint folder read whole into 4 shards
        assert_close(saved_arrays(out, "restored4", rank), saved_arrays(out, "epoch1"), atol=0)


@pytest.mark.slow
def test_torchrun_workers_join_and_resume(runs):
    """Under torchrun the strategy joins the world torchrun started (no self-launch)."""
    out, _, resume = runs
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", str(resume), "2", str(out)],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert "(saved by 2 worker(s), now 2)" in res.stdout
    for rank in range(2):
        assert_close(saved_arrays(out, "resumed2", rank), saved_arrays(out, "reference"))
