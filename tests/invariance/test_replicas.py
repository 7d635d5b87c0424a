"""1, 2, 3 (and, in the slow tier, 4) real gloo replicas train the same weights,
evaluate every sample once, accumulate without all-reducing, and explain unused parameters.

One launch per replica count (``jobs.GROUP``) trains every configuration; the tests
compare the dumps. MNIST subset, global batch 64 (not a multiple of 3), epochs whose
last global batch is partial (1, 3 or 40 samples: empty shares included).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import mirrorfit
from tests.invariance import jobs
from tests.procs import clean_env, run_python, write_script

pytestmark = pytest.mark.multiprocess

REPLICAS = (1, 2, 3)  # 4: test_four_replicas_too, in the slow tier
TRAINED = ("sgd", "adam", "bn", "accum", "accum_ref", "unused_auto")
ATOL = 1e-5  # float32 weights


def _launch(tmp, n):
    """(chief's report, every rank's report, weights) of ``jobs.GROUP`` on ``n`` replicas."""
    script = write_script(tmp, jobs.GROUP)
    res = run_python(script, str(n), str(tmp / f"w{n}.npz"), timeout=240,
                     env=clean_env(MIRRORFIT_NUM_THREADS="1"))
    assert res.returncode == 0, f"{n} replicas:\n{res.stderr[-4000:]}"
    lines = [json.loads((tmp / f"w{n}.npz.rank{r}.json").read_text()) for r in range(n)]
    assert [line["rank"] for line in lines] == list(range(n))
    chief = next(line for line in lines if line["rank"] == 0)
    return chief, lines, np.load(tmp / f"w{n}.npz")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{replicas: (chief's report, every rank's report, weights)} for 1..3 replicas."""
    tmp = tmp_path_factory.mktemp("invariance")
    return {n: _launch(tmp, n) for n in REPLICAS}


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("invariance4"), 4)


@pytest.mark.slow  # 4 processes on 2 cores; `pytest -m slow` runs it
@pytest.mark.parametrize("config", TRAINED)
def test_four_replicas_too(runs, four, config):
    one = runs[1][2]
    for k in (k for k in one.files if k.startswith(config + "/")):
        np.testing.assert_allclose(four[2][k], one[k], atol=ATOL, rtol=0, err_msg=k)


def _test_labels() -> np.ndarray:
    _, (_, y_te) = mirrorfit.datasets.mnist.load_data()
    return y_te[:1001].astype(np.int64)


@pytest.mark.parametrize("config", TRAINED)
@pytest.mark.parametrize("n", REPLICAS[1:])
def test_same_weights_as_one_replica(runs, config, n):
    one, many = runs[1][2], runs[n][2]
    keys = [k for k in one.files if k.startswith(config + "/")]
    assert keys and keys == [k for k in many.files if k.startswith(config + "/")]
    for k in keys:
        np.testing.assert_allclose(many[k], one[k], atol=ATOL, rtol=0, err_msg=k)
    first = keys[0]
    assert not np.allclose(one[first], 0)  # trained, not trivially zero


def test_history_is_global_and_the_same_on_every_rank(runs):
    for n in REPLICAS:
        histories = [line["sgd"]["history"] for line in runs[n][1]]
        assert all(h == histories[0] for h in histories)
        single = runs[1][0]["sgd"]["history"]
        assert histories[0]["label_mean"] == single["label_mean"]
        np.testing.assert_allclose(histories[0]["loss"], single["loss"], rtol=1e-6)


def test_evaluation_and_validation_see_every_sample_exactly_once(runs):
    exact = float(np.mean(_test_labels()))  # 1001 samples, evaluated in batches of 100
    for n in REPLICAS:
        for line in runs[n][1]:
            assert line["sgd"]["evaluate"]["label_mean"] == pytest.approx(exact, abs=1e-12)
            assert line["sgd"]["history"]["val_label_mean"] == [pytest.approx(exact, abs=1e-12)]
            assert line["fresh_evaluate"]["label_mean"] == pytest.approx(exact, abs=1e-12)


def test_evaluate_equals_one_process_exactly_on_identical_weights(runs):
    single = runs[1][0]["fresh_evaluate"]
    for n in REPLICAS[1:]:
        for line in runs[n][1]:
            assert line["fresh_evaluate"]["accuracy"] == single["accuracy"]  # counts: exact
            assert line["fresh_evaluate"]["loss"] == pytest.approx(single["loss"], rel=1e-6)
        trained = runs[n][0]["sgd"]
        assert trained["evaluate"]["accuracy"] == runs[1][0]["sgd"]["evaluate"]["accuracy"]
        assert trained["history"]["val_loss"] == pytest.approx(
            runs[1][0]["sgd"]["history"]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("n", REPLICAS[1:])
def test_predict_returns_each_sample_once_in_input_order(runs, n):
    one, many = runs[1][2]["predict"], runs[n][2]["predict"]
    assert many.shape == one.shape == (1001, 10)  # odd size, 3 replicas included
    np.testing.assert_allclose(many, one, atol=ATOL, rtol=0)


def test_sync_batchnorm_replaces_batchnorm_and_keeps_statistics_in_step(runs):
    for n in REPLICAS:
        assert "SyncBatchNorm" in runs[n][0]["bn"]["layers"]
        assert not any(name.startswith("BatchNorm") for name in runs[n][0]["bn"]["layers"])
    one, most = runs[1][2], runs[REPLICAS[-1]][2]
    for k in ("bn/2.running_mean", "bn/2.running_var", "bn/6.running_mean", "bn/6.running_var"):
        np.testing.assert_allclose(most[k], one[k], atol=ATOL, rtol=0, err_msg=k)
    assert int(most["bn/6.num_batches_tracked"]) == 16  # an empty share's step counted once


@pytest.mark.parametrize("n", REPLICAS)
def test_accumulating_4_micro_batches_equals_one_batch_4_times_larger(runs, n):
    w = runs[n][2]
    for k in (k for k in w.files if k.startswith("accum/")):
        np.testing.assert_allclose(w[k], w[k.replace("accum/", "accum_ref/")], atol=1e-6)


@pytest.mark.parametrize("n", REPLICAS[1:])
def test_accumulation_all_reduces_once_per_update_not_per_micro_batch(runs, n):
    accum, ref = runs[n][0]["accum"], runs[n][0]["accum_ref"]
    assert accum["updates"] == ref["updates"] == 16  # 63 micro-batches of 16 in groups of 4
    # the first update is averaged by hand (unused-parameter check); one bucket after that
    assert accum["allreduce_calls"] == ref["allreduce_calls"] == accum["updates"] - 1


def test_unused_parameters_are_detected_and_trained_around(runs):
    for n in REPLICAS[1:]:
        warned = runs[n][0]["unused_auto"]["warnings"]
        assert any("'extra.weight', 'extra.bias'" in w and "find_unused_parameters=True" in w
                   for w in warned), warned
    w = runs[REPLICAS[-1]][2]
    np.testing.assert_array_equal(w["unused_auto/extra.weight"],
                                  runs[1][2]["unused_auto/extra.weight"])  # never updated


@pytest.mark.parametrize("n", REPLICAS[1:])
def test_unused_parameters_error_names_them_not_the_ddp_riddle(runs, n):
    for line in runs[n][1]:
        for case in ("unused_strict", "unused_later"):
            message = line[case]["error"]
            assert message is not None, case
            assert "'extra.weight', 'extra.bias'" in message
            assert "find_unused_parameters=True" in message
            assert "Expected to have finished reduction" not in message
    assert "in the first step" in runs[n][0]["unused_strict"]["error"]


def test_multi_gpu_model_shim_trains_on_two_replicas(runs):
    assert runs[2][0]["adam"]["shim_replicas"] == 2


def test_run_in_a_worker_calls_the_function_in_scope(runs):
    for n in REPLICAS:
        assert [line["run"] for line in runs[n][1]] == [float(n)] * n
