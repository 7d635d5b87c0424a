"""A full disk while writing a checkpoint: one clear error, the previous file intact.

torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc:672] .
unexpected pos 816832 vs 816724``; mirrorfit raises ``CheckpointDiskFullError`` (an
``OSError`` with ``errno.ENOSPC``) naming the file and the size, removes its temporary
file and leaves the previous checkpoint as it was. Checked for real on a small tmpfs
(``small_disk``; skipped with the system's reason where mounting is not allowed) for
``Model.save``, ``ModelCheckpoint`` and ``BackupAndRestore`` in a one-process fit, an
asynchronous write and a writer whose error hides the OSError; the error mapping
itself everywhere.
"""

from __future__ import annotations

import errno

import pytest
import torch

from mirrorfit.checkpoint import CheckpointDiskFullError, atomic
from tests.checkpoint.disk_full_job import JOB
from tests.checkpoint.helpers import digest
from tests.checkpoint.small_disk import run_on_tmpfs
from tests.procs import write_script

#: "bare": a writer whose RuntimeError carries no OSError, on a disk with too little space
CASES = ["model.save", "ModelCheckpoint", "BackupAndRestore", "async", "bare"]


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disk-full")
    res = run_on_tmpfs(write_script(tmp, JOB), "4m", tmp / "disk")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.json_lines()
    assert any(line.get("finished") for line in lines), res.stderr[-3000:]
    return {line["case"]: line for line in lines if "case" in line}


@pytest.mark.parametrize("case", CASES)
def test_a_full_disk_raises_one_clear_error_and_keeps_the_previous_file(disk_full, case):
    out = disk_full[case]
    assert out["type"] == "CheckpointDiskFullError", out
    assert "OSError" in out["mro"] and out["errno"] == errno.ENOSPC
    assert out["needed"] > out["free"]
    assert out["message"] == (
        f"no space left on device while writing {out['path']!r} ({out['needed']} bytes "
        f"needed, {out['free']} free); the previous checkpoint is intact. Free some space "
        "there, or write the checkpoint to another directory.")
    if case != "bare":  # the OSError, not torch's RuntimeError
        assert "No space left on device" in out["cause"]
    assert out["before"] is not None and out["after"] == out["before"]
    assert out["loads"] is True  # (nothing to load for "bare")
    assert out["temps"] == [], "a temporary file was left behind"


def test_the_size_needed_is_the_size_of_the_file(disk_full):
    out = disk_full["model.save"]  # the same model saved twice: the same size
    assert out["needed"] == out["size"]


def test_enospc_from_any_writer_is_reported_the_same_way(tmp_path):
    # the error mapping without a small disk: a writer that runs out of space midway
    path = tmp_path / "model.pt"
    atomic.atomic_save({"w": torch.ones(1000)}, path)
    before = digest(path)

    def write(fp):
        fp.write(b"\0" * 100)
        if not isinstance(fp, atomic._ByteCounter):  # measuring the size works
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointDiskFullError, match=r"no space left on device while "
                       r"writing '.*model\.pt' \(100 bytes needed, \d+ free\); the "
                       r"previous checkpoint is intact") as exc:
        atomic.atomic_write(path, write)
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(path)
    assert isinstance(exc.value, OSError)
    assert digest(path) == before
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_first_write_that_does_not_fit_says_nothing_was_written(tmp_path):
    def write(fp):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    with pytest.raises(CheckpointDiskFullError, match=r"disk quota exceeded while writing "
                       r"'.*new\.pt' \(size unknown, \d+ free\); no file was written"):
        atomic.atomic_write(tmp_path / "new.pt", write)
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    def write(fp):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error") as exc:
        atomic.atomic_write(tmp_path / "x.pt", write)
    assert not isinstance(exc.value, CheckpointDiskFullError)
