"""The pieces behind the guarantees, without worker processes: the re-sharded loader,
loss scaling, the synced BatchNorm's maths (one-rank group), train/eval modes,
unused-parameter messages, scaling rules, the devices command and the shim."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mirrorfit
from mirrorfit import scaling
from mirrorfit.cli import main as cli_main
from mirrorfit.strategies import ddp
from mirrorfit.strategies.distribute import DistributedLoader
from mirrorfit.strategies.strategy import Strategy
from mirrorfit.strategies.sync_batchnorm import (
    SyncBatchNorm,
    _synced_forward,
    convert_sync_batchnorm,
    weightless_share,
)


def _replica(rank: int, world: int) -> Strategy:
    s = Strategy()
    s._rank, s._world = rank, world  # the sharding logic only; no process group
    return s


def _loader(n=10, batch=4, shuffle=False):
    data = TensorDataset(torch.arange(n, dtype=torch.float32).view(n, 1), torch.arange(n))
    return DataLoader(data, batch_size=batch, shuffle=shuffle)


# --- the re-sharded loader ------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shares_partition_each_global_batch_in_order_without_padding(world):
    n, batch = 11, 4  # last global batch: 3 samples, fewer than 4 replicas
    loaders = [_replica(r, world).distribute(nn.Linear(1, 1), None, _loader(n, batch, True),
                                             seed=3)[2] for r in range(world)]
    reference = _replica(0, 1).distribute(nn.Linear(1, 1), None, _loader(n, batch, True),
                                          seed=3)[2]
    for _epoch in range(2):  # each iteration is the next epoch
        per_rank = [[y.tolist() for _, y in loader] for loader in loaders]
        assert len({len(steps) for steps in per_rank}) == 1  # every replica: same step count
        for step, expected in enumerate([y.tolist() for _, y in reference]):
            assert [i for r in range(world) for i in per_rank[r][step]] == expected
    assert loaders[0].sampler.epoch == 1


def test_empty_share_is_a_batch_of_zero_rows_and_scale_loss_weighs_it_zero():
    loader = _replica(3, 4).distribute(nn.Linear(1, 1), None, _loader(11, 4), seed=0)[2]
    batches = list(loader)
    x, y = batches[-1]  # the last global batch has 3 samples: replica 3 gets none
    assert x.shape == (0, 1) and y.shape == (0,)
    assert loader.share is not None and (loader.share.size, loader.share.global_size) == (0, 3)
    net = nn.Linear(1, 2)
    loss = nn.functional.cross_entropy(net(x), y)  # the mean of nothing: NaN
    assert torch.isnan(loss)
    _replica(3, 4).scale_loss(loss).backward()
    assert all(p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
               for p in net.parameters())


def test_scale_loss_makes_uneven_shares_average_to_the_global_mean():
    sizes, world = [3, 2, 2], 3  # a global batch of 7
    s = _replica(0, world)
    scaled = [float(s.scale_loss(torch.tensor(1.0), n, 7)) for n in sizes]
    assert sum(scaled) / world == pytest.approx(1.0)  # DDP's average of the replicas' grads
    with pytest.raises(ValueError, match="size=8, global_size=7"):
        s.scale_loss(torch.tensor(1.0), 8, 7)


def test_scale_loss_without_a_known_share_says_what_to_do(monkeypatch):
    monkeypatch.setattr("mirrorfit.strategies.distribute._current", [None])
    with pytest.raises(ValueError, match=r"strategy\.distribute"):
        _replica(0, 2).scale_loss(torch.tensor(1.0))


def test_set_epoch_jumps_and_len_counts_global_steps():
    loader = _replica(0, 2).distribute(nn.Linear(1, 1), None, _loader(10, 4, True), seed=1)[2]
    assert len(loader) == 3 and loader.batch_size == 4
    first = [y.tolist() for _, y in loader]
    loader.set_epoch(0)
    assert [y.tolist() for _, y in loader] == first
    assert [y.tolist() for _, y in loader] != first  # epoch 1: another order


def test_distribute_rejects_what_it_cannot_shard():
    s = _replica(0, 2)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        s.distribute("net", None)
    with pytest.raises(TypeError, match="received list"):
        s.distribute(nn.Linear(1, 1), None, [1, 2], seed=0)
    no_batch = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=None)
    with pytest.raises(ValueError, match="batch_size=None"):
        s.distribute(nn.Linear(1, 1), None, no_batch, seed=0)
    assert isinstance(s.distribute(nn.Linear(1, 1), None, _loader(), seed=0)[2],
                      DistributedLoader)


# --- synced BatchNorm --------------------------------------------------------------------------
@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("shape", [(6, 3), (5, 3, 4), (4, 3, 2, 2)])
def test_synced_forward_and_backward_equal_torch_batchnorm(one_rank_group, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    ref, mine = nn.BatchNorm1d(3).double(), nn.BatchNorm1d(3).double()
    if len(shape) == 4:
        ref, mine = nn.BatchNorm2d(3).double(), nn.BatchNorm2d(3).double()
    convert_sync_batchnorm(mine)
    weights = torch.randn(*shape, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ref(x1) * weights).sum().backward()
    (_synced_forward(mine, x2) * weights).sum().backward()  # all-reduce over one rank
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad)
    torch.testing.assert_close(mine.bias.grad, ref.bias.grad)
    torch.testing.assert_close(mine.running_mean, ref.running_mean)
    torch.testing.assert_close(mine.running_var, ref.running_var)


def test_weightless_share_adds_nothing_to_statistics(one_rank_group):
    bn = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(2)))[0]
    bn.running_mean.fill_(1.0)
    with weightless_share(bn):
        out = _synced_forward(bn, torch.full((1, 2), 5.0))
    assert torch.isfinite(out).all()
    # no sample counted: the batch statistics are 0 (not 5), momentum 0.1
    torch.testing.assert_close(bn.running_mean, torch.full((2,), 0.9))


def test_weightless_share_runs_unsynced_batchnorm_in_eval_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with weightless_share(net):
        net(torch.ones(1, 2))  # one sample in training mode would raise
        assert not net[1].training
    assert net[1].training and torch.equal(net[1].running_mean, torch.zeros(2))


def test_convert_keeps_parameters_buffers_and_keys():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.SyncBatchNorm(2))
    params, keys = list(net.parameters()), list(net.state_dict())
    convert_sync_batchnorm(net)
    assert [type(m) for m in net[1:]] == [SyncBatchNorm, SyncBatchNorm]
    assert list(net.parameters()) == params and list(net.state_dict()) == keys
    net.train()
    assert net(torch.randn(4, 1, 5, 5)).shape == (4, 2, 3, 3)  # one replica: plain BatchNorm
    with pytest.raises(ValueError, match=r"\(N, 2, ...\); received \(4, 3\)"):
        net[1]._check_input_dim(torch.zeros(4, 3))


# --- train / eval modes --------------------------------------------------------------------------
def test_evaluate_and_predict_run_in_eval_mode_and_restore_modes():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 2))
    module[2].eval()  # a frozen BatchNorm: fit must leave it in eval mode
    model = mirrorfit.Model(module)
    model.compile("sgd", mirrorfit.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, seed=0)
    assert torch.equal(module[2].running_mean, torch.zeros(8))  # stayed frozen
    p1, p2 = model.predict(x), model.predict(x)
    np.testing.assert_array_equal(p1, p2)  # dropout off
    assert model.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert module.training and module[1].training and not module[2].training


# --- unused parameters ------------------------------------------------------------------------
def test_ddp_riddle_becomes_a_message_with_names():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    riddle = ("Expected to have finished reduction in the prior iteration ...\n"
              "Parameter indices which did not receive grad for rank 1: 2 3\n")
    message = ddp._explain(net, riddle)
    assert "on rank 1: '1.weight', '1.bias'" in message
    assert "find_unused_parameters=True" in message and "Expected to" not in message


def test_trainable_parameters_skip_frozen_and_shared_ones():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[0].bias.requires_grad_(False)
    net[1].weight = net[0].weight
    assert [n for n, _ in ddp.trainable_parameters(net)] == ["0.weight", "1.bias"]


# --- scaling, devices, shim -----------------------------------------------------------------------
def test_learning_rate_rules_and_their_errors():
    assert scaling.scaled_learning_rate(0.1, 256, 64) == pytest.approx(0.4)
    assert scaling.scaled_learning_rate(0.1, 256, 64, "sqrt") == pytest.approx(0.2)
    assert scaling.scaled_learning_rate(0.1, 256, 64, "none") == 0.1
    with pytest.raises(ValueError, match="received 'cubic'"):
        scaling.scaled_learning_rate(0.1, 256, 64, "cubic")
    with pytest.raises(ValueError, match="global_batch=0"):
        scaling.scaled_learning_rate(0.1, 0, 64)
    assert [scaling.warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    assert scaling.warmup_factor(0, 4, start_factor=0.2) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="warmup_steps"):
        scaling.LearningRateWarmup(0.1, warmup_steps=-1)


def test_devices_command_prints_devices_and_the_rank(monkeypatch, capsys):
    assert cli_main(["devices"]) == 0
    assert capsys.readouterr().out.startswith("cpu ")
    for k, v in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                 "GROUP_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    assert cli_main(["devices"]) == 0
    assert "torchelastic: rank 3 of 4, local rank 1 of 2, node 1" in capsys.readouterr().out


def test_devices_command_shows_cuda_memory_and_physical_ids(monkeypatch, capsys):
    fake = types.SimpleNamespace(name="FakeGPU", total_memory=80 * 1024**3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: fake)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (70 * 1024**3, 80 * 1024**3))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert mirrorfit.list_devices() == ["cuda:0", "cuda:1"]
    assert mirrorfit.devices.resolve_devices([1]) == ["cuda:1"]
    assert cli_main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "cuda:1       FakeGPU   80.0 GiB total, 70.0 GiB free   (physical GPU 3)"
    assert cli_main(["devices", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["devices"][0] == {"device": "cuda:0", "name": "FakeGPU", "total_gib": 80.0,
                                  "free_gib": 70.0, "physical": "1"}


def test_multi_gpu_model_gives_a_model_that_compiles_and_fits(monkeypatch):
    monkeypatch.setenv("MIRRORFIT_NUM_THREADS", "1")
    parallel = mirrorfit.multi_gpu_model(mirrorfit.Model(nn.Linear(3, 1)), gpus=1)
    assert isinstance(parallel.strategy, mirrorfit.MirroredStrategy)
    parallel.compile("sgd", "mse")
    hist = parallel.fit(np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), batch_size=4,
                        verbose=0)
    assert len(hist.history["loss"]) == 1
    assert "MirroredStrategy" in (mirrorfit.multi_gpu_model.__doc__ or "").splitlines()[0]
    with pytest.raises(TypeError, match="received str"):
        mirrorfit.multi_gpu_model("model", gpus=2)


def test_interactive_session_is_a_missing_script_or_a_live_ipython(monkeypatch):
    from mirrorfit.cluster.local import interactive_session

    script = types.ModuleType("__main__")
    script.__file__ = "train.py"
    monkeypatch.setitem(sys.modules, "__main__", script)
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: None))
    assert not interactive_session()  # a script that merely imports IPython re-runs
    monkeypatch.setitem(sys.modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: object()))
    assert interactive_session()  # a notebook kernel
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    assert interactive_session()  # python -c / a REPL: no script file
