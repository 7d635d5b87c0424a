"""Precision policies, in one process: names, errors, autocast, the float16 loss
scaler skipping a step on inf gradients, and its state in a checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit import mixed_precision, precision


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    mixed_precision.set_global_policy("float32")


def test_keras_and_lightning_names_resolve_to_the_same_policies():
    cpu = torch.device("cpu")
    assert isinstance(precision.resolve("float32", cpu), precision.FullPrecision)
    assert isinstance(precision.resolve("32", cpu), precision.FullPrecision)
    bf16 = precision.resolve("bf16-mixed", cpu)
    assert bf16.name == "mixed_bfloat16" and bf16.compute_dtype == torch.bfloat16
    fp16 = precision.resolve("mixed_float16", cpu)
    assert isinstance(fp16, precision.MixedPrecision) and fp16.scaler is not None
    assert mixed_precision.Policy("16-mixed").compute_dtype == "float16"


def test_unknown_policy_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"'mixed_bfloat61'.*'mixed_bfloat16'"):
        mixed_precision.set_global_policy("mixed_bfloat61")
    with pytest.raises(ValueError, match="'fp8'"):
        mirrorfit.OneDeviceStrategy("cpu", precision="fp8")


def test_a_policy_the_device_cannot_run_names_both():
    with pytest.raises(ValueError, match=r"'mixed_bfloat16' cannot run on meta.*no autocast"):
        precision.resolve("mixed_bfloat16", torch.device("meta"))


def test_global_policy_is_read_at_compile_and_autocasts_the_forward():
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            out = self.fc(x)
            seen.append(out.dtype)
            return out

    mixed_precision.set_global_policy("mixed_bfloat16")
    model = mirrorfit.Model(Probe())
    model.compile("sgd", "mse")
    mixed_precision.set_global_policy("float32")  # compile already read it
    model.fit(torch.ones(8, 4), torch.zeros(8, 2), batch_size=4, verbose=0)
    assert seen == [torch.bfloat16, torch.bfloat16]
    assert model.module.fc.weight.dtype == torch.float32  # variables stay float32
    assert model.predict(torch.ones(3, 4)).dtype == "float32"


def test_the_strategy_policy_overrides_the_global_one():
    mixed_precision.set_global_policy("mixed_bfloat16")
    with mirrorfit.OneDeviceStrategy("cpu", precision="32").scope():
        model = mirrorfit.Model(nn.Linear(2, 1))
        model.compile("sgd", "mse")
    assert isinstance(model.training_context.setup.precision, precision.FullPrecision)


def _fp16_model():
    torch.manual_seed(0)
    mixed_precision.set_global_policy("mixed_float16")
    model = mirrorfit.Model(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)))
    model.compile("sgd", "mse")
    mixed_precision.set_global_policy("float32")
    return model


def test_float16_skips_the_step_with_inf_gradients_and_halves_the_scale():
    model = _fp16_model()
    x = torch.ones(4, 3)
    y = torch.zeros(4, 1)
    model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    before = [w.copy() for w in model.get_weights()]
    scaler = model.training_context.setup.precision
    scale = scaler.scale
    x_bad = x.clone()
    x_bad[0, 0] = 1e6  # float16's largest is 65504: the forward overflows
    model.fit(x_bad, y, batch_size=4, verbose=0, shuffle=False)
    after = model.get_weights()
    assert all((a == b).all() for a, b in zip(after, before, strict=True))
    assert scaler.scale == scale / 2
    model.fit(x, y, batch_size=4, verbose=0, shuffle=False)
    assert any((a != b).any() for a, b in zip(model.get_weights(), before, strict=True))


def test_the_loss_scale_travels_with_the_model_state():
    model = _fp16_model()
    x_bad = torch.ones(4, 3)
    x_bad[0, 0] = 1e6
    model.fit(x_bad, torch.zeros(4, 1), batch_size=4, verbose=0)
    state = model.state_dict()
    assert state["precision"]["scale"] == 32768.0
    other = _fp16_model()
    assert other.training_context.setup.precision.scale == 65536.0
    other.load_state_dict(state)
    assert other.training_context.setup.precision.scale == 32768.0


def test_model_files_carry_the_loss_scale(tmp_path):
    model = _fp16_model()
    x_bad = torch.ones(4, 3)
    x_bad[0, 0] = 1e6
    model.fit(x_bad, torch.zeros(4, 1), batch_size=4, verbose=0)
    model.save(tmp_path / "m.pt")
    other = _fp16_model()
    other.load_weights(tmp_path / "m.pt")
    assert other.training_context.setup.precision.scale == 32768.0
