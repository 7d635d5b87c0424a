"""PipelineStrategy with real gloo workers: 2 stages on 2 workers, one launch.

The same final weights, logs, evaluation and predictions as one device (a small MLP
and a small CNN; SGD and Adam; GPipe and 1F1B; a split point inside a nested
``nn.Sequential``; a last batch that runs in fewer
micro-batches; float16 skipping an overflowing step on both stages); a batch that
does not split into micro-batches refused on every rank; BackupAndRestore folders
(every stage its part, through DCP) resumed at the exact step; whole ``get_weights``
on every rank; a consolidated ``model.save`` file and a ModelCheckpoint folder read
by ``mirrorfit.load_model`` on one device. Then, in this process, that backup
refused by a pipeline of another stage count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit.callbacks import BackupAndRestore
from mirrorfit.checkpoint.errors import IncompatibleCheckpointError
from mirrorfit.checkpoint.sharded import is_sharded
from tests.procs import REPO, clean_env, run_python, write_script
from tests.strategies import pipeline_jobs
from tests.strategies.arrays import assert_close, saved_arrays

pytestmark = pytest.mark.multiprocess

CONFIGS = ("mlp_sgd_gpipe", "mlp_adam_1f1b", "cnn_adam_gpipe", "cnn_sgd_1f1b")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    script = write_script(tmp, pipeline_jobs.TRAIN, "train.py")
    out = tmp / "out"
    out.mkdir()
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    res = run_python(script, str(out), env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, sorted(res.json_lines(), key=lambda r: r["rank"]), res.stdout


@pytest.mark.parametrize("config", CONFIGS)
def test_two_stages_train_like_one_device(run, config):
    out, lines, _ = run
    assert len(lines) == 2
    one = saved_arrays(out, f"{config}.one")
    for rank, line in enumerate(lines):
        assert_close(saved_arrays(out, f"{config}.pipe", rank), one)  # whole weights on every rank
        assert_close(saved_arrays(out, f"{config}.pipe.pred", rank),
                     saved_arrays(out, f"{config}.one.pred"))
        pipe, ref = line[config]["pipe"], line[config]["one"]
        for key in ("history", "evaluate"):
            logs = pipe["history"] if key == "history" else {k: [v] for k, v in
                                                              pipe["evaluate"].items()}
            expected = ref["history"] if key == "history" else {k: [v] for k, v in
                                                                 ref["evaluate"].items()}
            assert logs["accuracy"] == expected["accuracy"]  # exact counts
            assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_a_nested_split_point_trains_like_one_device_and_frees_the_other_stage(run):
    out, lines, _ = run
    one = saved_arrays(out, "nested.one")
    for rank in range(2):
        assert_close(saved_arrays(out, "nested.pipe", rank), one, atol=1e-5)
    # blocks.3 starts stage 2: blocks is cut in two; each worker keeps only its leaves
    assert lines[0]["nested_real"] == ["embed.weight", "embed.bias", "blocks.1.weight",
                                       "blocks.1.bias"]
    assert lines[1]["nested_real"] == ["blocks.3.weight", "blocks.3.bias", "head.1.weight",
                                       "head.1.bias"]
    assert lines[1]["nested_stage"] == lines[1]["nested_real"]  # the whole model's names


def test_inputs_of_another_length_get_their_own_stages(run):
    out, _, _ = run
    for rank in range(2):  # weights after 2 lengths, then predictions at 2 more
        assert_close(saved_arrays(out, "lengths.pipe", rank), saved_arrays(out, "lengths.one"))


def test_float16_skips_the_overflowing_step_on_every_stage(run):
    out, lines, _ = run
    for rank, line in enumerate(lines):
        assert line["fp16_scales_pipe"] == line["fp16_scales_one"]
        assert line["fp16_scales_pipe"][0] == 32768.0  # halved from 65536 at the first step
        assert_close(saved_arrays(out, "fp16.pipe", rank), saved_arrays(out, "fp16.one"), atol=1e-3)


def test_each_worker_keeps_its_own_stage(run):
    _, lines, _ = run
    # MLP children 112 | 0 | 272 | 0 | 51 parameters: the 272-parameter Linear starts stage 2
    assert lines[0]["real_params"] == ["0.weight", "0.bias"]
    assert lines[1]["real_params"] == ["2.weight", "2.bias", "4.weight", "4.bias"]
    assert [line["optimizer_params"] for line in lines] == [2, 4]


def test_the_progress_bar_shows_the_last_stages_values(run):
    _, lines, stdout = run
    # worker 0 (stage 1, no outputs) prints the global logs, which are the last stage's
    epoch1 = lines[0]["reference_history"]
    assert f"loss: {epoch1['loss'][0]:.4f} - accuracy: {epoch1['accuracy'][0]:.4f}" in stdout


def test_a_batch_that_does_not_split_into_microbatches_is_refused_everywhere(run):
    _, lines, _ = run
    for line in lines:
        assert "a batch of 18 samples gives shares of 18" in line["batch_error"]
        assert "batch_size divisible by 4" in line["batch_error"]


def test_backups_resume_at_the_exact_step(run):
    out, lines, stdout = run
    assert all(line["backup_is_folder"] for line in lines)
    assert is_sharded(out / "backup-copy" / "backup.pt")
    assert "at epoch 2, step 2" in stdout
    for rank in range(2):
        assert_close(saved_arrays(out, "resumed", rank), saved_arrays(out, "reference"))


def test_files_load_on_one_device(run):
    out, lines, _ = run
    stopped = saved_arrays(out, "stopped")
    assert [w.shape for w in stopped] == [(16, 6), (16,), (16, 16), (16,), (3, 16), (3,)]
    assert_close(saved_arrays(out, "stopped", 1), stopped, atol=0)
    for rank, line in enumerate(lines):
        assert_close(saved_arrays(out, "loaded", rank), stopped, atol=0)  # model.save, consolidated
        assert line["loaded_optimizer_state"] == 6  # Adam's state of every parameter
        assert line["checkpoints"] == ["model-1.pt"]  # epoch 2 was interrupted
        assert_close(saved_arrays(out, "checkpoint1", rank), saved_arrays(out, "epoch1"),
                     atol=0)  # a folder
        assert line["checkpoint_optimizer_state"] == 6


def test_a_backup_of_another_stage_count_is_refused(run):
    out, _, _ = run
    strategy = mirrorfit.PipelineStrategy(stages=1, microbatches=2)
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16),
                                              nn.Tanh(), nn.Linear(16, 3)))
        model.compile("adam", "sparse_categorical_crossentropy")
    x = np.zeros((16, 6), dtype="float32")
    with pytest.raises(IncompatibleCheckpointError, match=r"with 2 stages; this "
                       r"PipelineStrategy has stages=1\. Resume with the stage count"):
        model.fit(x, np.zeros(16, dtype="int64"), batch_size=8, verbose=0,
                  callbacks=[BackupAndRestore(out / "backup-copy")])


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["self", "torchrun"])
def test_two_stages_times_two_replicas_train_like_one_device(tmp_path, launcher):
    """A 2-D mesh on 4 workers: ranks 0, 1 are replica 0's stages, ranks 2, 3 replica 1's;
    the stages' gradients are averaged over the dp axis; training, evaluation and
    prediction with an empty share (the last batch holds 1 sample) are one device's, so
    is a run resumed from a backup folder. Started by the strategy itself, or joined
    under torchrun."""
    script = write_script(tmp_path, pipeline_jobs.DATA_PARALLEL, "dp.py")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    if launcher == "self":
        res = run_python(script, str(tmp_path), env=env, timeout=300)
        returncode, stdout, stderr = res.returncode, res.stdout, res.stderr
    else:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc-per-node", "4", str(script), str(tmp_path)],
                              capture_output=True, text=True, timeout=300, env=env)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert returncode == 0, stderr[-3000:]
    lines = sorted((json.loads(line[5:]) for line in stdout.splitlines()
                    if line.startswith("JSON ")), key=lambda r: r["rank"])
    assert [(r["stage"], r["replica"], r["replicas"]) for r in lines] == [
        (0, 0, 2), (1, 0, 2), (0, 1, 2), (1, 1, 2)]
    one = saved_arrays(tmp_path, "dp.one")  # weights, then the predictions
    tail = saved_arrays(tmp_path, "dp.tail.one")
    for line in lines:
        assert_close(saved_arrays(tmp_path, "dp.pipe", line["rank"]), one)
        assert_close(saved_arrays(tmp_path, "dp.tail.pipe", line["rank"]), tail)  # an empty share
        # resumed from the backup after global step 6 (one's weights; then its predictions)
        assert_close(saved_arrays(tmp_path, "dp.resumed", line["rank"]), one[:-1])
        assert line["pipe"]["evaluate"]["accuracy"] == line["one"]["evaluate"]["accuracy"]
        assert line["pipe"]["evaluate"]["loss"] == pytest.approx(line["one"]["evaluate"]["loss"],
                                                                 rel=1e-6)
        assert line["pipe"]["history"]["accuracy"] == line["one"]["history"]["accuracy"]
        assert line["pipe"]["history"]["loss"] == pytest.approx(line["one"]["history"]["loss"],
                                                                rel=1e-6)


@pytest.mark.slow
def test_a_world_that_is_not_a_multiple_of_the_stages_is_refused_on_every_rank(tmp_path):
    """torchrun starts 3 workers for a 2-stage pipeline: each says what to change."""
    script = write_script(tmp_path, "import mirrorfit\n"
                          "mirrorfit.PipelineStrategy(stages=2)\n", "bad.py")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "3", str(script)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode != 0
    message = ("PipelineStrategy(stages=2) needs a world of a multiple of 2 workers; this job "
               "has 3. Start stages x replicas workers, or change stages.")
    assert message in res.stderr
