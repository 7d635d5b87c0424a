"""Mixed precision and compiled steps with real gloo workers."""

from __future__ import annotations

import numpy as np
import pytest

from tests.procs import run_python, write_script
from tests.strategies import jobs

pytestmark = pytest.mark.multiprocess


@pytest.mark.slow  # long; `pytest -m slow` runs it
def test_bf16_trains_mnist_within_half_a_point_of_float32(tmp_path):
    res = run_python(write_script(tmp_path, jobs.BF16_MNIST), timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.json_lines()
    assert len(lines) == 2 and lines[0]["accuracy"] == lines[1]["accuracy"]
    acc = lines[0]["accuracy"]
    assert acc["float32"] > 0.9
    assert abs(acc["mixed_bfloat16"] - acc["float32"]) <= 0.005, acc


def _fp16(tmp_path, backup, out, die_at):
    script = write_script(tmp_path, jobs.FP16, "fp16.py")
    return run_python(script, str(backup), str(out), str(die_at), timeout=300)


@pytest.mark.slow  # long; `pytest -m slow` runs it
def test_fp16_overflow_skips_the_step_everywhere_and_resumes_bit_identically(tmp_path):
    ref = _fp16(tmp_path, tmp_path / "b0", tmp_path / "ref.npz", 0)
    assert ref.returncode == 0, ref.stderr[-3000:]
    lines = sorted(ref.json_lines(), key=lambda r: r["rank"])
    assert lines[0]["steps"] == lines[1]["steps"]  # every replica took the same decisions
    steps = {s["step"]: s for s in lines[0]["steps"]}
    assert steps[1]["scale"] == 2.0**15  # Keras's initial loss scale
    assert steps[4]["w"] == steps[3]["w"]  # the overflowing step was skipped...
    assert steps[4]["scale"] == steps[3]["scale"] / 2  # ...and the scale halved
    assert all(steps[k]["w"] != steps[k - 1]["w"] for k in (2, 3, 5, 7))
    assert steps[9]["w"] == steps[8]["w"] and steps[14]["w"] == steps[13]["w"]  # epochs 2, 3

    crashed = _fp16(tmp_path, tmp_path / "b1", tmp_path / "x.npz", 9)
    assert crashed.returncode != 0
    resumed = _fp16(tmp_path, tmp_path / "b1", tmp_path / "resumed.npz", 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    assert resumed.json_lines()[0]["scale"] == lines[0]["scale"]
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k


@pytest.mark.slow  # compiling takes most of it; `pytest -m slow` runs it
@pytest.mark.parametrize("devices", [2])
def test_jit_compile_matches_eager_without_recompiling_per_step(tmp_path, devices):
    res = run_python(write_script(tmp_path, jobs.JIT), str(devices), timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    for line in res.json_lines():
        eager, compiled = line["False"], line["True"]
        assert compiled["compiled"] == "OptimizedModule"
        for a, b in zip(compiled["weights"], eager["weights"], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        assert compiled["eval"]["accuracy"] == eager["eval"]["accuracy"]
        # 3 more epochs (15 steps) and an evaluation compiled nothing new
        assert compiled["frames_at_end"] == compiled["frames_after_first_epoch"]
        assert compiled["frames_at_end"]["ok"] > 0 and not eager["frames_at_end"]
