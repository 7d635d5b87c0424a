"""PipelineStrategy's pure logic (no process group): where a model is cut, the
errors for models and arguments that cannot be pipelined, and the optimizer state
keyed by name that lets the stages' parts fit together."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit.strategies import pipeline_split
from mirrorfit.strategies import pipeline_state as states


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def test_balanced_cut_minimises_the_largest_stage():
    assert pipeline_split.balanced([10, 0, 10, 0, 10], 2) == [(0, 2), (2, 5)]
    assert pipeline_split.balanced([1, 1, 1, 1], 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert pipeline_split.balanced([100, 1, 1, 1, 1], 2) == [(0, 1), (1, 5)]
    # the MLP: 112 | 0 | 272 | 0 | 51 parameters -> the 272-parameter layer alone is best
    assert pipeline_split.stage_bounds(_mlp(), 2, None) == [(0, 2), (2, 5)]


def test_split_points_name_children_and_keep_their_names():
    model = _mlp()
    bounds = pipeline_split.stage_bounds(model, 3, ("2", "4"))
    assert bounds == [(0, 2), (2, 4), (4, 5)]
    stage = pipeline_split.stage_module(model, bounds[1])
    assert list(stage.state_dict()) == ["2.weight", "2.bias"]  # the whole model's names
    assert stage._modules["2"] is model[2]  # the same module: nothing is copied


@pytest.mark.parametrize("points, message", [
    (("9",), "not a child of the nn.Sequential; its children are"),
    (("2", "4"), "needs 1 split point(s)"),
    (("0",), "after the first"),
])
def test_bad_split_points_are_named(points, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pipeline_split.stage_bounds(_mlp(), 2, points)


def test_a_module_that_cannot_be_cut_is_refused_with_the_fix():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(TypeError, match=r"received a Net\. Write the model as nn.Sequential"):
        pipeline_split.stage_bounds(Net(), 2, None)
    with pytest.raises(TypeError, match="needs its forward traced"):
        pipeline_split.stage_bounds(Net(), 2, ("b",))
    with pytest.raises(ValueError, match=r"stages=4\) needs at least 4 children"):
        pipeline_split.stage_bounds(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), 4, None)
    with pytest.raises(ValueError, match="module paths"):
        pipeline_split.check_split_points([3])


@pytest.mark.parametrize("kwargs, message", [
    ({"stages": 0}, r"stages=0\): expected an integer >= 1"),
    ({"microbatches": 2.0}, r"microbatches=2.0\)"),
    ({"schedule": "zb"}, r"schedule='zb'\): expected one of \['1f1b', 'gpipe'\]"),
    ({"schedule": "1f1b", "microbatches": 1}, "needs microbatches >= stages"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mirrorfit.PipelineStrategy(**kwargs)


def test_optimizer_state_by_name_round_trips_through_the_whole_model_layout():
    model = _mlp()
    opt = torch.optim.Adam(model.parameters())
    model(torch.ones(2, 6)).sum().backward()
    opt.step()
    everything = [[n for n, _ in model.named_parameters()]]
    names = {id(p): n for n, p in model.named_parameters()}
    named = states.named_optimizer_state(opt, names)
    owned = frozenset(["2.weight", "2.bias"])
    # a stage's part, from the name-keyed layout and from one device's index-keyed one
    for saved in (states.with_all_names(named, everything), opt.state_dict()):
        part = states.owned_only(saved, owned, everything)
        assert part["param_groups"][0]["params"] == ["2.weight", "2.bias"]
        assert set(part["state"]) == owned
    whole = states.indexed_whole([named["state"]], named["param_groups"], everything)
    assert whole["param_groups"][0]["params"] == list(range(6))
    fresh = torch.optim.Adam(_mlp().parameters())
    fresh.load_state_dict(whole)
    assert torch.equal(fresh.state_dict()["state"][2]["exp_avg"],
                       opt.state_dict()["state"][2]["exp_avg"])
