"""The strategy contract with real gloo workers: every strategy, at every replica
count it supports, trains to the weights of one device (float32 within 1e-5),
reports the same global history on every rank, evaluates exactly, predicts in
input order, clips the *global* gradient, and, with nothing seeded but
``torch.manual_seed(0)``, shuffles the same way on every run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.procs import REPO, clean_env, run_python, write_script
from tests.strategies import jobs
from tests.strategies.contract import REPLICAS

pytestmark = pytest.mark.multiprocess

RUNS = [(kind, n) for kind, counts in REPLICAS.items() for n in counts]
REFERENCE = ("one_device", 1)
CONFIGS = ("plain", "adam", "accumulate", "clipnorm", "global_clipnorm", "clipvalue", "bf16")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    script = write_script(tmp, jobs.CONTRACT)
    env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    out = {}
    for kind, n in RUNS:
        npz = tmp / f"{kind}-{n}.npz"
        res = run_python(script, kind, str(n), str(npz), env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        out[(kind, n)] = (sorted(res.json_lines(), key=lambda r: r["rank"]), np.load(npz))
    return out


def _weights(npz, config):
    return [npz[k] for k in sorted((k for k in npz.files if k.startswith(config + "/")
                                    and not k.endswith("/pred")), key=lambda k: int(k[-1]))]


@pytest.mark.parametrize("run", RUNS[1:], ids=[f"{k}-{n}" for k, n in RUNS[1:]])
def test_same_weights_and_predictions_as_one_device(runs, run):
    _, ref = runs[REFERENCE]
    _, got = runs[run]
    for config in CONFIGS:
        # bf16 rounds partial sums of the split; its outputs have 8 significant bits, so
        # one rounding flip moves a prediction by one unit in the last place (2**-8 of it)
        tol, rtol = (1e-3, 2.0**-7) if config == "bf16" else (1e-5, 0.0)
        for a, b in zip(_weights(got, config), _weights(ref, config), strict=True):
            np.testing.assert_allclose(a, b, atol=tol, rtol=0, err_msg=config)
        np.testing.assert_allclose(got[f"{config}/pred"], ref[f"{config}/pred"], atol=tol,
                                   rtol=rtol, err_msg=config)


@pytest.mark.parametrize("run", RUNS, ids=[f"{k}-{n}" for k, n in RUNS])
def test_every_rank_reports_the_global_history_and_exact_evaluation(runs, run):
    lines, _ = runs[run]
    ref_lines, _ = runs[REFERENCE]
    assert [line["rank"] for line in lines] == list(range(len(lines)))
    for config in CONFIGS:
        assert all(line[config] == lines[0][config] for line in lines), config
        ref = ref_lines[0][config]
        got = lines[0][config]
        if config != "bf16":
            assert got["eval"]["accuracy"] == ref["eval"]["accuracy"], config
            assert got["history"]["accuracy"] == ref["history"]["accuracy"], config
        np.testing.assert_allclose(got["eval"]["loss"], ref["eval"]["loss"], rtol=1e-3)
    assert lines[0]["bf16"]["precision"] == "MixedPrecision"
    assert lines[0]["plain"]["precision"] == "FullPrecision"


def test_clipping_is_active(runs):
    """The clipped runs end elsewhere than the plain one (the clip bites), so their
    agreement with one device above shows the clip is taken on the global gradient."""
    _, ref = runs[REFERENCE]
    plain = _weights(ref, "plain")
    for config in ("clipnorm", "global_clipnorm", "clipvalue"):
        clipped = _weights(ref, config)
        assert max(np.abs(a - b).max() for a, b in zip(clipped, plain, strict=True)) > 1e-3
