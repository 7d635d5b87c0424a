"""Atomic writes: a crash mid-write or before the rename leaves the old file whole."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from mirrorfit.checkpoint import atomic, load_checkpoint, save_checkpoint
from tests.checkpoint.helpers import digest
from tests.procs import run_python, write_script

KILLED_MID_WRITE = r'''
import os, signal, sys
import torch
from mirrorfit.checkpoint import save_checkpoint

real_save = torch.save

def save_half_then_die(obj, fp, *args, **kwargs):
    fp.write(b"PK\x03\x04" + b"\x00" * 1_000_000)  # half a zip archive reaches the disk
    fp.flush()
    os.fsync(fp.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
save_checkpoint({"module": {"w": torch.full((1000,), 2.0)}}, sys.argv[1], "weights")
print("not reached")
'''


def _old(path):
    save_checkpoint({"module": {"w": torch.ones(1000)}}, path, "weights")
    return digest(path)


def test_writer_killed_mid_write_leaves_the_previous_file_loadable(tmp_path):
    path = tmp_path / "model.pt"
    before = _old(path)
    res = run_python(write_script(tmp_path, KILLED_MID_WRITE), str(path), timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert "not reached" not in res.stdout
    assert digest(path) == before
    assert torch.equal(load_checkpoint(path, ["weights"])["module"]["w"], torch.ones(1000))
    stale = list(tmp_path.glob(".model.pt.tmp-*"))
    assert len(stale) == 1 and stale[0].stat().st_size > 1_000_000
    assert atomic.remove_stale_temps(path) == stale
    assert not stale[0].exists() and path.exists()


def test_error_between_write_and_rename_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    before = _old(path)

    def failing_replace(src, dst):
        raise OSError("disk went away between write and rename")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk went away"):
        save_checkpoint({"module": {"w": torch.zeros(1000)}}, path, "weights")
    monkeypatch.undo()
    assert digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_exception_inside_the_write_removes_the_temp(tmp_path):
    path = tmp_path / "sub" / "x.bin"

    def write(fp):
        fp.write(b"partial")
        raise RuntimeError("serializer failed")

    with pytest.raises(RuntimeError, match="serializer failed"):
        atomic.atomic_write(path, write)
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_write_replaces_and_creates_directories(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    atomic.atomic_write(path, lambda fp: fp.write(b"one"))
    atomic.atomic_write(path, lambda fp: fp.write(b"two"))
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["f.bin"]
    assert atomic.temp_path(path).parent == path.parent  # same directory: rename is atomic
    assert atomic.remove(path) and not atomic.remove(path)


@pytest.mark.parametrize("depth", [0, 2])
def test_a_file_where_a_folder_is_needed_is_named_and_nothing_is_written(tmp_path, depth):
    blocker = tmp_path / "runs"
    blocker.write_text("a file, not a folder")
    target = blocker.joinpath(*["sub"] * depth, "ckpt.pt")
    with pytest.raises(NotADirectoryError, match=r"'.*runs' is a file, not a directory"):
        atomic.atomic_save({"w": torch.ones(2)}, target)
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
