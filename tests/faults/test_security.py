"""Security: checkpoints load with ``torch.load(weights_only=True)``, so a file
carrying a pickled object is refused with a clear error and its code never runs.
(The rendezvous binding to loopback is checked in ``test_ports.py``.)"""

from __future__ import annotations

import pathlib

import pytest
import torch

import mirrorfit
from mirrorfit.checkpoint import CheckpointError, UnsafeCheckpointError
from mirrorfit.checkpoint.io import header


class _Payload:
    """Unpickling this creates ``marker``: arbitrary code that a full unpickler runs."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _loaders():
    yield "load_checkpoint", lambda p: mirrorfit.checkpoint.load_checkpoint(p, ("model",))
    if hasattr(mirrorfit, "load_model"):
        yield "load_model", lambda p: mirrorfit.load_model(p, module=torch.nn.Linear(4, 2))


@pytest.mark.parametrize(("name", "load"), list(_loaders()), ids=[n for n, _ in _loaders()])
def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path, name, load):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    module = torch.nn.Linear(4, 2)
    torch.save({"mirrorfit": header("model"), "module": module.state_dict(), "optimizer": None,
                "compile": None, "payload": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as exc:
        load(path)
    assert isinstance(exc.value, CheckpointError)
    text = str(exc.value)
    assert f"Refusing to load {str(path)!r}: it holds a pickled Python object" in text
    assert "weights_only=True" in text
    assert not marker.exists(), "the payload ran"
    # the payload is real: a full unpickler does run it
    torch.load(path, weights_only=False)
    assert marker.exists()
