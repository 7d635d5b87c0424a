"""ShardedStrategy on one replica (this process, or one child process): which
submodules become FSDP units, bad ``wrap`` values, and checkpoint folders written,
refused by another architecture, and left loadable by a kill mid-save."""

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
from tests.procs import REPO, clean_env, run_python, write_script


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


def test_containers_are_replaced_by_their_items():
    # fully_shard refuses a container without forward (ValueError), as a ModuleList is
    net = nn.Module()
    net.embed = nn.Embedding(5, 4)
    net.blocks = nn.ModuleList([Block(), Block()])
    assert _units(net, None) == [net.embed, net.blocks[0], net.blocks[1]]
    assert _units(net, ("blocks",)) == [net.blocks[0], net.blocks[1]]


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


def test_a_class_the_module_lacks_is_named_with_the_classes_it_has():
    with pytest.raises(ValueError, match=r"wrap names TransformerEncoderLayer, but Sequential "
                                         r"has no submodule of that class; its submodules are "
                                         r"\['Block', 'Linear', 'ReLU', 'Tanh'\]"):
        _units(_net(), (nn.TransformerEncoderLayer,))


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


KILLED_MID_SAVE = r'''
import os, signal, sys
import numpy as np, torch
from torch import nn
import mirrorfit
from mirrorfit.callbacks import BackupAndRestore

backup, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
saves = []
real_symlink = os.symlink


def symlink_or_die(src, dst, *args, **kwargs):
    # checkpoint.sharded publishes a folder with a link; the kill comes after the shards
    # and the folder's rename, before the link: the worst moment
    saves.append(src)
    if len(saves) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_symlink(src, dst, *args, **kwargs)


os.symlink = symlink_or_die
strategy = mirrorfit.ShardedStrategy(devices=1)
torch.manual_seed(0)
with strategy.scope():
    model = mirrorfit.Model(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
    model.compile("adam", "mse")
x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
model.fit(x, x[:, :2], batch_size=8, epochs=2, verbose=0, seed=1,
          callbacks=[BackupAndRestore(backup, save_freq=1)] if backup != "-" else [])
np.savez(out, *model.get_weights())
'''


@pytest.mark.slow  # `pytest -m slow` runs it
def test_a_kill_while_publishing_a_backup_folder_leaves_the_previous_one(tmp_path):
    script = write_script(tmp_path, KILLED_MID_SAVE)
    env = clean_env(PYTHONPATH=str(REPO / "src"))
    backup = tmp_path / "backup"
    killed = run_python(script, str(backup), str(tmp_path / "x.npz"), "3", env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = sorted(p.name for p in backup.iterdir())
    assert len(left) == 3 and "backup.pt" in left  # link, live data, orphaned new data
    resumed = run_python(script, str(backup), str(tmp_path / "resumed.npz"), "0", env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at epoch 1, step 2 (saved by 1 worker(s), now 1)" in resumed.stdout
    assert not backup.exists()  # finished: deleted, the orphan with it
    reference = run_python(script, "-", str(tmp_path / "ref.npz"), "0", env=env)
    assert reference.returncode == 0, reference.stderr[-2000:]
    with np.load(tmp_path / "resumed.npz") as got, np.load(tmp_path / "ref.npz") as ref:
        for k in ref.files:
            np.testing.assert_allclose(got[k], ref[k], atol=1e-6, rtol=0)
