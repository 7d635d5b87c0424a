"""The strategy contract, pure logic (no process group): capabilities declared as
interfaces, the set-up of module and optimizer, the data-parallel coordinate, the
loss scale, clipping arguments, and rebinding an optimizer to new parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit import optimizers
from mirrorfit.data.sharding import Replica, loss_scale
from mirrorfit.strategies import capabilities as caps
from mirrorfit.strategies.setup import Clipping
from tests.strategies.contract import STRATEGIES, capabilities, make_strategy

ALL_CAPABILITIES = {caps.BackwardSyncControl, caps.ShardedState}


@pytest.fixture(params=sorted(STRATEGIES))
def kind(request):
    return request.param


def test_capabilities_are_declared_as_interfaces(kind):
    strategy = make_strategy(kind, 1)
    assert isinstance(strategy, mirrorfit.Strategy)
    declared = {c for c in ALL_CAPABILITIES if isinstance(strategy, c)}
    assert declared == capabilities(kind)


def test_setup_points_the_optimizer_at_the_modules_parameters(kind):
    strategy = make_strategy(kind, 1)
    module = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    setup = strategy.setup(module, opt, precision="mixed_bfloat16",
                           clipping=Clipping(global_clipnorm=1.0))
    assert setup.optimizer is opt
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in setup.module.parameters()}
    assert setup.precision.name == "mixed_bfloat16" and setup.clipping.global_clipnorm == 1.0


def test_one_replica_reads_the_whole_batch(kind):
    strategy = make_strategy(kind, 1)
    assert strategy.replica == Replica(0, 1)
    assert strategy.num_replicas_in_sync == strategy.world_size == 1


def test_the_data_parallel_coordinate_is_apart_from_the_global_rank():
    strategy = mirrorfit.Strategy()
    strategy._rank, strategy._world = 3, 4  # e.g. 2 stages x 2 replicas: rank 3 ...
    strategy._dp_rank, strategy._dp_world = 1, 2  # ... is replica 1 of 2
    assert strategy.replica == Replica(1, 2)
    assert strategy.num_replicas_in_sync == 2 and strategy.rank == 3 and strategy.world_size == 4


def test_loss_scale_makes_the_average_the_global_mean():
    # per-sample losses 1..5; shares [1, 2, 3] (mean 2) and [4, 5] (mean 4.5) on 2 replicas:
    # the replicas' scaled means, averaged, give the mean over all five (3)
    averaged = (loss_scale(3, 5, 2) * 2.0 + loss_scale(2, 5, 2) * 4.5) / 2
    assert averaged == pytest.approx(3.0)
    assert loss_scale(0, 1, 2) == 0.0 and loss_scale(4, 4, 1) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"clipnorm": 0}, "clipnorm must be a positive number"),
    ({"clipvalue": float("nan")}, "clipvalue"),
    ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "only one of clipnorm=1.0 and global_clipnorm"),
])
def test_bad_clipping_names_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mirrorfit.Model(nn.Linear(2, 1)).compile("sgd", "mse", **kwargs)


def test_clipping_read_from_the_optimizer_like_keras():
    module = nn.Linear(2, 1)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    opt.clipnorm = 0.5  # type: ignore[attr-defined]  # Keras optimizers carry it
    model = mirrorfit.Model(module)
    model.compile(opt, "mse")
    assert model.training_context.setup.clipping == Clipping(clipnorm=0.5)


def test_rebind_moves_the_optimizer_to_replaced_parameters():
    module = nn.Linear(3, 2)
    opt = torch.optim.Adam(module.parameters())
    before = {id(p): n for n, p in module.named_parameters()}
    module.weight = nn.Parameter(module.weight.detach().clone())  # as sharding does
    assert optimizers.rebind(opt, before, dict(module.named_parameters())) is opt
    assert opt.param_groups[0]["params"][0] is module.weight
    # a stage that keeps only some parameters
    opt2 = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)
    names = {id(p): n for n, p in zip(("weight", "bias"), opt2.param_groups[0]["params"],
                                      strict=True)}
    optimizers.rebind(opt2, names, {"bias": nn.Parameter(torch.zeros(2))})
    assert [tuple(p.shape) for p in opt2.param_groups[0]["params"]] == [(2,)]


def test_rebind_refuses_foreign_tensors_and_lost_state():
    module = nn.Linear(3, 2)
    stray = torch.optim.SGD([torch.zeros(5, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(5,\) that is not a parameter"):
        optimizers.rebind(stray, {}, dict(module.named_parameters()))
    opt = torch.optim.Adam(module.parameters())
    module(torch.ones(1, 3)).sum().backward()
    opt.step()
    before = {id(p): n for n, p in module.named_parameters()}
    module.weight = nn.Parameter(module.weight.detach().clone())
    with pytest.raises(ValueError, match="already holds state"):
        optimizers.rebind(opt, before, dict(module.named_parameters()))
