"""ShardedStrategy in this process (no workers): which submodules become FSDP units,
bad ``wrap`` values, and checkpoint folders written and refused on one replica (a
run that can later move to more replicas, or come from them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit.callbacks import BackupAndRestore, Callback
from mirrorfit.checkpoint.errors import MismatchedCheckpointError
from mirrorfit.checkpoint.sharded import is_sharded
from mirrorfit.strategies.sharded import _units


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.inner(x))


def _net() -> nn.Sequential:
    return nn.Sequential(Block(), nn.Tanh(), Block(), nn.Linear(4, 2))


def test_default_units_are_the_roots_children_with_parameters():
    net = _net()
    assert _units(net, None) == [net[0], net[2], net[3]]  # not the Tanh


def test_wrap_by_path_and_class_puts_inner_units_first():
    net = _net()
    assert _units(net, ("0", "0.inner")) == [net[0].inner, net[0]]
    units = _units(net, (Block, nn.Linear))
    assert units.index(net[0].inner) < units.index(net[0])
    assert set(map(id, units)) == {id(m) for m in (net[0], net[0].inner, net[2], net[2].inner,
                                                   net[3])}


def test_a_missing_path_is_named_with_the_paths_that_exist():
    with pytest.raises(ValueError, match=r"wrap names 'encoder', which is not a submodule of "
                                         r"Sequential; its module paths include '0', '0.inner'"):
        _units(_net(), ("encoder",))


def test_a_wrap_entry_that_is_neither_path_nor_class_is_refused():
    with pytest.raises(ValueError, match=r"received 3\. Example: wrap="):
        mirrorfit.ShardedStrategy(wrap=[3])  # type: ignore[list-item]


class _Crash(RuntimeError):
    pass


class _Stop(Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise _Crash


def _fit(module: nn.Module, backup_dir, callbacks=()) -> mirrorfit.Model:
    strategy = mirrorfit.ShardedStrategy(devices=1)
    torch.manual_seed(0)
    with strategy.scope():
        model = mirrorfit.Model(module)
        model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, seed=1,
              callbacks=[*callbacks, BackupAndRestore(backup_dir, save_freq=1)])
    return model


def test_one_replica_writes_folders_and_refuses_another_architecture(tmp_path):
    with pytest.raises(_Crash):
        _fit(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), tmp_path, [_Stop()])
    assert is_sharded(tmp_path / "backup.pt")
    other = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    before = [p.detach().clone() for p in other.parameters()]
    with pytest.raises(MismatchedCheckpointError,
                       match=r"different shapes: 0\.weight: checkpoint \(8, 4\), model \(5, 4\)"):
        _fit(other, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters(), strict=True))
    # the right architecture resumes from the folder and finishes
    done = _fit(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), tmp_path)
    assert done.training_context.epoch == 2 and not (tmp_path / "backup.pt").exists()
