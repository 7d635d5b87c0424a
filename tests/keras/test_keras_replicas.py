"""A Keras 3 model (Conv2D, MaxPooling2D, BatchNormalization, Flatten, Dense with a
regularizer) trains to the same weights and BatchNorm statistics on 1 replica (here) and
2 real gloo workers (sync_batchnorm=True)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.keras.jobs import REPLICAS, train
from tests.procs import REPO, run_python, write_script

pytestmark = pytest.mark.multiprocess


def test_one_and_two_replicas_reach_the_same_weights(tmp_path) -> None:
    out = tmp_path / "w2.npz"
    res = run_python(write_script(tmp_path, REPLICAS), str(out), str(REPO), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.json_lines()
    assert len(lines) == 2
    single = train(None)
    two = np.load(out)
    assert len(two.files) == len(single["weights"])
    for key, expected in zip(two.files, single["weights"], strict=True):
        np.testing.assert_allclose(two[key], expected, rtol=1e-4, atol=1e-5, err_msg=key)
    assert np.abs(np.array(single["moving_mean"])).max() > 1e-3  # statistics were updated
    for line in lines:  # every replica holds the global statistics and the same metrics
        np.testing.assert_allclose(line["moving_mean"], single["moving_mean"], atol=1e-5)
        assert line["eval"]["accuracy"] == single["eval"]["accuracy"]
        assert line["eval"]["loss"] == pytest.approx(single["eval"]["loss"], rel=1e-4)
