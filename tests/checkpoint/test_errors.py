"""Bad checkpoints give one clear error each and are never modified."""

from __future__ import annotations

import io as bytes_io
import os
import pickle
import re
import zipfile

import pytest
import torch

import mirrorfit
from mirrorfit.checkpoint import (
    CheckpointError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
    MismatchedCheckpointError,
    UnsafeCheckpointError,
    io,
    load_checkpoint,
)
from tests.checkpoint.helpers import build, digest


class Payload:
    """A class that would run code when unpickled without weights_only."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture
def saved(tmp_path):
    model = build()
    path = tmp_path / "model.pt"
    model.save(path)
    return model, path


def _unchanged_after(path, exc_type, fn, match):
    before = digest(path)
    with pytest.raises(exc_type, match=match):
        fn()
    assert digest(path) == before


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_truncated_or_empty_file_is_corrupt(saved, cut):
    model, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    _unchanged_after(path, CorruptCheckpointError, lambda: model.load_weights(path),
                     r"is corrupt or not a torch file.*left as is")


def test_garbage_is_corrupt_and_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"hello world" * 20)
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        load_checkpoint(path, ["model"])


def test_pickled_objects_are_refused_and_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"mirrorfit": io.header("model"), "module": {}, "x": Payload()}, path)
    _unchanged_after(path, UnsafeCheckpointError, lambda: load_checkpoint(path, ["model"]),
                     r"pickled Python object \(print\).*weights_only=True")
    assert "this must never run" not in capsys.readouterr().out


def _with_pickle(data: bytes) -> bytes:
    """A torch zip file whose ``data.pkl`` is ``data``."""
    buf = bytes_io.BytesIO()
    torch.save({"a": 1}, buf)
    buf.seek(0)
    out = bytes_io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith("data.pkl") else src.read(info))
    return out.getvalue()


def test_os_system_is_unsafe_not_corrupt(tmp_path):
    # torch 2.13 blocks the posix module: "unsupported GLOBAL posix.system whose module
    # posix is blocked", not the usual "Unsupported global: GLOBAL ..."
    path = tmp_path / "system.pt"
    path.write_bytes(_with_pickle(pickle.dumps({"run": os.system}, protocol=2)))
    _unchanged_after(path, UnsafeCheckpointError, lambda: load_checkpoint(path, ["model"]),
                     r"pickled Python object \(posix\.system\)")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("content", ["os.system", "print", "protocol 4", "garbage", "half"])
def test_no_message_advises_turning_weights_only_off(tmp_path, content):
    # torch's own message says "Re-running torch.load with weights_only set to False will
    # likely succeed"; mirrorfit's never does
    buf = bytes_io.BytesIO()
    torch.save({"mirrorfit": io.header("model"), "module": {"w": torch.zeros(50)}}, buf)
    files = {"os.system": _with_pickle(pickle.dumps({"run": os.system}, protocol=2)),
             "print": _with_pickle(pickle.dumps({"run": print}, protocol=2)),
             "protocol 4": _with_pickle(pickle.dumps({"a": 1}, protocol=4)),
             "garbage": b"hello world" * 20, "half": buf.getvalue()[: len(buf.getvalue()) // 2]}
    path = tmp_path / "bad.pt"
    path.write_bytes(files[content])
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, ["model"])
    text = str(exc.value)
    assert "bad.pt" in text
    assert not re.search(r"weights_only\W+(?:set to\W+|=\W*)?False", text, re.I), text
    assert exc.value.__suppress_context__  # torch's text is not chained under it either


def test_numpy_arrays_are_refused_as_pickles(tmp_path):
    import numpy as np

    path = tmp_path / "np.pt"
    torch.save({"module": {"w": np.zeros(3)}}, path)
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        load_checkpoint(path, ["model"])


def test_another_model_names_the_differences_and_changes_nothing(saved):
    _, path = saved
    other = build(hidden=9)
    before = [t.clone() for t in other.module.state_dict().values()]
    _unchanged_after(path, MismatchedCheckpointError, lambda: other.load_weights(path),
                     r"another model \(different shapes: 0.weight: checkpoint \(8, 5\), "
                     r"model \(9, 5\)")
    assert all(torch.equal(a, b) for a, b in zip(before, other.module.state_dict().values(),
                                                  strict=True))


def test_missing_and_unexpected_keys_are_listed(saved):
    _, path = saved
    other = mirrorfit.Model(torch.nn.Sequential(torch.nn.Linear(5, 8)))
    other.compile("adam", "mse")
    with pytest.raises(MismatchedCheckpointError, match=r"not in the model: 3.weight, 3.bias"):
        other.load_weights(path)


def test_optimizer_groups_must_match(saved):
    _, path = saved
    other = build()
    layers = list(other.module.children())
    groups = [{"params": layers[0].parameters()}, {"params": layers[3].parameters(), "lr": 0.1}]
    other.compile(torch.optim.Adam(groups), "sparse_categorical_crossentropy")
    before = [t.clone() for t in other.module.state_dict().values()]
    with pytest.raises(MismatchedCheckpointError, match=r"groups of sizes \[4\]; this model's "
                                                        r"Adam has \[2, 2\]"):
        other.load_weights(path)
    assert all(torch.equal(a, b) for a, b in zip(before, other.module.state_dict().values(),
                                                  strict=True))


def test_newer_format_version_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "future.pt"
    head = io.header("model") | {"format_version": io.FORMAT_VERSION + 1}
    torch.save({"mirrorfit": head, "module": {}}, path)
    _unchanged_after(path, IncompatibleCheckpointError, lambda: load_checkpoint(path, ["model"]),
                     r"format version 2 .*reads versions 1 to 1. Upgrade mirrorfit")


def test_plain_state_dict_is_not_a_mirrorfit_checkpoint(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(IncompatibleCheckpointError,
                       match=r"no 'mirrorfit' header.*load_state_dict"):
        load_checkpoint(path, ["model"])


def test_wrong_kind_says_which_loader_to_use(saved):
    _, path = saved
    with pytest.raises(IncompatibleCheckpointError, match=r"'model' checkpoint; expected one of "
                                                          r"\['backup'\]"):
        load_checkpoint(path, ["backup"])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.pt"):
        load_checkpoint(tmp_path / "nothing.pt", ["model"])
