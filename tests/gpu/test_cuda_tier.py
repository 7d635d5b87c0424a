"""The CUDA tier: NCCL, autocast on the GPU, pinned-memory prefetch. Skipped (with
the reason) where there are not enough CUDA devices; run these on a GPU machine:

    python -m pytest -q tests/gpu
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit
from tests.procs import run_python, write_script

NCCL_JOB = r'''
import json, sys
import numpy as np, torch
import mirrorfit

devices, policy, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
strategy = mirrorfit.MirroredStrategy(devices=devices)
mirrorfit.mixed_precision.set_global_policy(policy)
torch.manual_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(1001, 20)).astype("float32")
y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
with strategy.scope():
    model = mirrorfit.Model(torch.nn.Sequential(
        torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)))
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True),
                  ["accuracy"])
model.fit(x, y, batch_size=60, epochs=2, verbose=0, seed=7)
ev = model.evaluate(x, y, batch_size=100, return_dict=True, verbose=0)
backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
if strategy.is_chief:
    np.savez(out, *model.get_weights())
sys.stdout.write("JSON " + json.dumps({"rank": strategy.rank, "eval": ev, "backend": backend,
                                       "device": str(strategy.device)}) + "\n")
sys.stdout.flush()
'''


@pytest.mark.requires_gpus(2)
@pytest.mark.multiprocess
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16", "mixed_float16"])
def test_nccl_two_gpus_match_one(tmp_path, policy):
    script = write_script(tmp_path, NCCL_JOB)
    one = run_python(script, "1", policy, str(tmp_path / "w1.npz"), timeout=300)
    two = run_python(script, "2", policy, str(tmp_path / "w2.npz"), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    lines = sorted(two.json_lines(), key=lambda r: r["rank"])
    assert [line["backend"] for line in lines] == ["nccl", "nccl"]
    assert [line["device"] for line in lines] == ["cuda:0", "cuda:1"]
    tol = 1e-5 if policy == "float32" else 2e-2
    w1, w2 = np.load(tmp_path / "w1.npz"), np.load(tmp_path / "w2.npz")
    for k in w1.files:
        np.testing.assert_allclose(w2[k], w1[k], atol=tol, rtol=0)


@pytest.mark.requires_gpus(1)
@pytest.mark.parametrize("policy, dtype", [("mixed_bfloat16", torch.bfloat16),
                                           ("mixed_float16", torch.float16)])
def test_autocast_on_the_gpu(policy, dtype):
    seen = []
    net = nn.Linear(8, 2)
    net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    mirrorfit.mixed_precision.set_global_policy(policy)
    try:
        with mirrorfit.OneDeviceStrategy("cuda:0").scope():
            model = mirrorfit.Model(net)
            model.compile("adam", "mse")
    finally:
        mirrorfit.mixed_precision.set_global_policy("float32")
    model.fit(np.ones((16, 8), "float32"), np.zeros((16, 2), "float32"), batch_size=8,
              verbose=0)
    assert seen and set(seen) == {dtype}
    assert next(net.parameters()).dtype == torch.float32


@pytest.mark.requires_gpus(1)
def test_prefetch_pins_and_moves_batches_to_the_gpu():
    x = torch.randn(64, 4)
    ds = mirrorfit.data.Dataset.from_tensor_slices((x, x.sum(1, keepdim=True))).batch(16)
    with mirrorfit.OneDeviceStrategy("cuda:0").scope():
        model = mirrorfit.Model(nn.Linear(4, 1))
        model.compile("sgd", "mse")
    hist = model.fit(ds.prefetch(2), epochs=2, verbose=0)
    assert len(hist.history["loss"]) == 2
