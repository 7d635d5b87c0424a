"""model.summary(), History.plot and `mirrorfit plot`; the optional extras'
messages when tensorboard or matplotlib are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit.cli import main
from mirrorfit.plotting import panels, read_csv_log
from mirrorfit.summary import summary_lines
from tests.callbacks.helpers import build, data
from tests.procs import run_python, write_script

PNG = b"\x89PNG\r\n\x1a\n"


def _cnn():
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Dropout(0.5), nn.Linear(8 * 13 * 13, 10))
    net[0].weight.requires_grad_(False)  # frozen: non-trainable
    return net


def test_summary_table_like_keras():
    lines = []
    model = mirrorfit.Model(_cnn())
    text = model.summary(input_shape=(1, 28, 28), print_fn=lines.append)
    assert "\n".join(lines) == text
    assert lines[0] == 'Model: "Sequential"'
    assert lines[2].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    rows = {ln.split()[0]: ln for ln in lines if ln.startswith(" ") and "(" in ln}
    assert rows["0"].split() == ["0", "(Conv2d)", "(None,", "8,", "26,", "26)", "80"]
    assert rows["4"].split() == ["4", "(Flatten)", "(None,", "1352)", "0"]
    assert rows["6"].split() == ["6", "(Linear)", "(None,", "10)", "13,530"]
    assert "Total params: 13,626 (53.23 KB)" in lines
    assert "Trainable params: 13,554 (52.95 KB)" in lines  # 13,626 - 72 frozen conv weights
    assert "Non-trainable params: 72 (288.00 B)" in lines
    assert "Buffers (e.g. BatchNorm statistics): 17 (72.00 B)" in lines


def test_summary_without_input_has_no_shape_column_and_prints(capsys):
    build().summary()
    out = capsys.readouterr().out
    assert "Output Shape" not in out and " 0 (Linear)" in out and "Total params: 66" in out


def test_summary_with_a_sample_and_several_outputs():
    lines = summary_lines(nn.LSTM(4, 8, batch_first=True), sample=torch.zeros(3, 5, 4))
    assert "[(3, 5, 8), [(1, 3, 8), (1, 3, 8)]]" in lines[4]


class _NumpyOp(nn.Module):
    """An op with no meta kernel (it leaves torch): the summary falls back to zeros."""

    def __init__(self):
        super().__init__()
        self.bn, self.drop = nn.BatchNorm1d(4), nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(torch.from_numpy(x.numpy() * 2)))


def test_summary_falls_back_to_zeros_without_touching_the_module():
    net = _NumpyOp().train()
    rng, stats = torch.get_rng_state(), net.bn.running_mean.clone()
    lines = summary_lines(net, input_shape=(4,))
    assert any(ln.split()[:3] == ["bn", "(BatchNorm1d)", "(None,"] for ln in lines)
    assert net.training and torch.equal(net.bn.running_mean, stats)
    assert torch.equal(torch.get_rng_state(), rng)


def test_summary_errors_name_the_input():
    net = nn.Linear(4, 2)
    with pytest.raises(RuntimeError, match=r"inputs of shape \[\(1, 5\)\].*check input_shape"):
        summary_lines(net, input_shape=(5,))
    with pytest.raises(ValueError, match=r"received \(4.5,\)"):
        summary_lines(net, input_shape=(4.5,))
    with pytest.raises(ValueError, match="input_shape or sample, not both"):
        summary_lines(net, input_shape=(4,), sample=torch.zeros(1, 4))


def test_history_plot_and_the_plot_command(tmp_path, capsys):
    x, y = data()
    log = tmp_path / "log.csv"
    hist = build().fit(x, y, batch_size=30, epochs=3, verbose=0, validation_split=0.2,
                       callbacks=[mirrorfit.callbacks.CSVLogger(log)])
    assert hist.plot(tmp_path / "a" / "h.png").read_bytes()[:8] == PNG
    assert panels(hist.history) == ["loss", "accuracy"]
    epochs, from_csv = read_csv_log(log)
    assert epochs == [0, 1, 2]
    assert {k: list(np.round(v, 12)) for k, v in from_csv.items()} == \
           {k: list(np.round(v, 12)) for k, v in hist.history.items()}
    assert main(["plot", str(log), "-o", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    assert "wrote" in capsys.readouterr().out


def test_plot_command_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["plot", str(bad)]) == 2
    assert "is not a CSVLogger log" in capsys.readouterr().err
    bad.write_text("epoch,loss\n0,x\n")
    assert main(["plot", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nothing to plot"):
        mirrorfit.callbacks.History().plot(tmp_path / "h.png")


MISSING = r'''
import sys
sys.modules["tensorboard"] = None   # as if the optional extras were not installed
sys.modules["matplotlib"] = None
import mirrorfit
try:
    mirrorfit.callbacks.TensorBoard("logs")
except ImportError as exc:
    print("ImportError:", exc)
history = mirrorfit.callbacks.History()
history.history, history.epoch = {"loss": [1.0]}, [0]
try:
    history.plot("h.png")
except ImportError as exc:
    print("ImportError:", exc)
from mirrorfit.cli import main
sys.exit(main(["plot", sys.argv[1]]))
'''


def test_missing_extras_are_named(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss\n0,1.0\n")
    res = run_python(write_script(tmp_path, MISSING), str(log), timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "ImportError: mirrorfit.callbacks.TensorBoard needs the tensorboard package: " \
           "pip install 'mirrorfit[tensorboard]'" in res.stdout
    assert "ImportError: plotting training curves needs matplotlib: pip install " \
           "'mirrorfit[plot]'" in res.stdout
    assert "mirrorfit plot: error: plotting training curves needs matplotlib" in res.stderr
    assert "Traceback" not in res.stderr
