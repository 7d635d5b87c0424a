"""The strategy contract in a one-rank gloo group (in this process): collectives are
identities, and the training state goes through the strategy's save and load and
comes back exactly (weights, optimizer, loss scale, position)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import mirrorfit
from mirrorfit.checkpoint.state import capture_training_state, restore_training_state
from mirrorfit.checkpoint.writer import CheckpointWriter
from tests.strategies.contract import STRATEGIES, make_strategy


@pytest.fixture(params=sorted(STRATEGIES))
def kind(request):
    return request.param


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_collectives_are_identities(kind, one_rank_group):
    s = make_strategy(kind, 1)
    assert s.reduce(2.5, "sum") == 2.5 and s.reduce(2.5, "mean") == 2.5
    t = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(s.gather(t), t)
    assert s.all_gather_object({"a": 1}) == [{"a": 1}]
    assert s.broadcast_object("x") == "x"
    s.barrier()


def _model(strategy, policy="mixed_float16"):
    torch.manual_seed(0)
    mirrorfit.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = mirrorfit.Model(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
            model.compile("adam", "mse")
    finally:
        mirrorfit.mixed_precision.set_global_policy("float32")
    return model


def test_training_state_round_trips_through_the_strategy(kind, one_rank_group, tmp_path):
    strategy = make_strategy(kind, 1)
    model = _model(strategy)
    x = np.random.default_rng(0).normal(size=(24, 4)).astype("float32")
    x[3, 0] = 1e6  # one overflowing step: the loss scale moves off its start
    model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, shuffle=False)
    ctx = model.training_context
    state = capture_training_state(ctx, [])
    path = tmp_path / "state.pt"
    strategy.save_checkpoint(state or {}, path, "backup", CheckpointWriter())

    other = _model(strategy)
    assert other.training_context.setup.precision.scale == 65536.0
    # a sharded strategy loads into this model's own layout, as BackupAndRestore does
    template = capture_training_state(other.training_context, [])
    loaded = strategy.load_checkpoint(path, ("backup",), template)
    restore_training_state(other.training_context, loaded, [], repr(str(path)))
    for a, b in zip(other.get_weights(), model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    # the overflowing sample comes once per epoch: two halvings
    assert other.training_context.setup.precision.scale == ctx.setup.precision.scale == 16384.0
    assert (other.training_context.epoch, other.training_context.step) == (ctx.epoch, ctx.step)
    exp_avg = [s["exp_avg"] for s in ctx.optimizer.state.values()]
    got = [s["exp_avg"] for s in other.training_context.optimizer.state.values()]
    assert all(torch.equal(a, b) for a, b in zip(exp_avg, got, strict=True))
