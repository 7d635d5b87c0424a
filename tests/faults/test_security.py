"""Security: checkpoints load with ``torch.load(weights_only=True)``, so a file
carrying a pickled object is refused with a clear error and its code never runs.
(The rendezvous binding to loopback is checked in ``test_ports.py``.)"""

from __future__ import annotations

import os
import pathlib
import re

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


class _Shell:
    """Unpickling this runs a shell command through ``os.system`` (torch 2.13 blocks the
    whole ``posix`` module: "unsupported GLOBAL posix.system whose module posix is
    blocked")."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


#: torch's advice to reload without the safety net, in any of its wordings
ADVICE = re.compile(r"weights_only\W+(?:set to\W+|=\W*)?False", re.IGNORECASE)


def _loaders():
    yield "load_checkpoint", lambda p: mirrorfit.checkpoint.load_checkpoint(p, ("model",))
    if hasattr(mirrorfit, "load_model"):
        yield "load_model", lambda p: mirrorfit.load_model(p, module=torch.nn.Linear(4, 2))


_PAYLOADS = {"pathlib": (_Payload, "getattr"), "os.system": (_Shell, "posix.system")}


@pytest.mark.parametrize("payload", list(_PAYLOADS))
@pytest.mark.parametrize(("name", "load"), list(_loaders()), ids=[n for n, _ in _loaders()])
def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path, name, load, payload):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    module = torch.nn.Linear(4, 2)
    cls, global_name = _PAYLOADS[payload]
    torch.save({"mirrorfit": header("model"), "module": module.state_dict(), "optimizer": None,
                "compile": None, "payload": cls(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as exc:
        load(path)
    assert isinstance(exc.value, CheckpointError)
    text = str(exc.value)
    assert f"Refusing to load {str(path)!r}: it holds a pickled Python object" in text
    assert global_name in text
    assert "weights_only=True" in text
    assert not ADVICE.search(text), f"the message advises turning the safety off: {text}"
    assert exc.value.__cause__ is None and exc.value.__suppress_context__  # torch's advice hidden
    assert not marker.exists(), "the payload ran"
    # the payload is real: a full unpickler does run it
    torch.load(path, weights_only=False)
    assert marker.exists()
