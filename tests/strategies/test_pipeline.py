"""PipelineStrategy's pure logic (no process group): where a model is cut, the
errors for models and arguments that cannot be pipelined, and the optimizer state
keyed by name that lets the stages' parts fit together."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import mirrorfit
from mirrorfit.strategies import pipeline_split
from mirrorfit.strategies import pipeline_state as states


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def _nested() -> nn.Sequential:
    """A root whose child ``blocks`` (and ``blocks.2``) are nn.Sequential."""
    from collections import OrderedDict
    blocks = nn.Sequential(nn.Linear(8, 8), nn.Tanh(),
                           nn.Sequential(nn.Linear(8, 8), nn.Tanh()), nn.Linear(8, 8))
    return nn.Sequential(OrderedDict([("embed", nn.Linear(4, 8)), ("blocks", blocks),
                                      ("head", nn.Linear(8, 2))]))


def test_balanced_cut_minimises_the_largest_stage():
    assert pipeline_split.balanced([10, 0, 10, 0, 10], 2) == [(0, 2), (2, 5)]
    assert pipeline_split.balanced([1, 1, 1, 1], 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert pipeline_split.balanced([100, 1, 1, 1, 1], 2) == [(0, 1), (1, 5)]
    # the MLP: 112 | 0 | 272 | 0 | 51 parameters -> the 272-parameter layer alone is best
    cut = pipeline_split.cut(_mlp(), 2, None)
    assert cut.bounds == [(0, 2), (2, 5)]
    assert cut.units == ["0", "1", "2", "3", "4"]
    # balanced cuts stay between the root's children, nested Sequentials whole
    assert pipeline_split.cut(_nested(), 2, None).units == ["embed", "blocks", "head"]


def test_split_points_name_children_and_keep_their_names():
    model = _mlp()
    cut = pipeline_split.cut(model, 3, ("2", "4"))
    assert cut.bounds == [(0, 2), (2, 4), (4, 5)]
    stage = pipeline_split.stage_module(model, cut.stage_units(1))
    assert list(stage.state_dict()) == ["2.weight", "2.bias"]  # the whole model's names
    assert stage._modules["2"] is model[2]  # the same module: nothing is copied


def test_a_nested_split_point_cuts_the_sequentials_on_its_path():
    model = _nested()
    cut = pipeline_split.cut(model, 2, ("blocks.2.1",))
    # blocks and blocks.2 are opened: their children are units; embed and head are not
    assert cut.units == ["embed", "blocks.0", "blocks.1", "blocks.2.0", "blocks.2.1",
                         "blocks.3", "head"]
    assert cut.bounds == [(0, 4), (4, 7)]
    first = pipeline_split.stage_module(model, cut.stage_units(0))
    second = pipeline_split.stage_module(model, cut.stage_units(1))
    assert list(first.state_dict()) == ["embed.weight", "embed.bias", "blocks.0.weight",
                                        "blocks.0.bias", "blocks.2.0.weight", "blocks.2.0.bias"]
    assert list(second.state_dict()) == ["blocks.3.weight", "blocks.3.bias", "head.weight",
                                         "head.bias"]
    # the same module objects inside new containers named as the cut ones
    assert first.blocks[2][0] is model.blocks[2][0] and second.head is model.head
    assert first.blocks is not model.blocks and list(second.blocks._modules) == ["2", "3"]
    inner = second.blocks._modules["2"]
    assert isinstance(inner, nn.Sequential) and list(inner._modules) == ["1"]
    # the two stages run one after the other compute the whole model
    x = torch.randn(3, 4)
    torch.testing.assert_close(second(first(x)), model(x), rtol=0, atol=0)


def test_nested_and_top_level_points_mix_and_a_cut_container_starts_at_its_first_child():
    model = _nested()
    cut = pipeline_split.cut(model, 3, ("blocks", "blocks.2"))  # "blocks" = "blocks.0"
    assert [cut.stage_units(i) for i in range(3)] == [
        ["embed"], ["blocks.0", "blocks.1"], ["blocks.2", "blocks.3", "head"]]
    assert pipeline_split.cut(model, 2, ("head",)).units == ["embed", "blocks", "head"]


@pytest.mark.parametrize("points, message", [
    (("9",), "split point '9': the model has no child '9'; its children are "
             "['0', '1', '2', '3', '4']. Name one of them"),
    (("2", "4"), "needs 1 split point(s)"),
    (("0",), "split point '0' is where the model starts (stage 1 begins with '0'); name the "
             "module that starts stage 2, e.g. '1'"),
    (("2.weight",), "split point '2.weight' goes through '2', a Linear; only nn.Sequential "
                    "containers are cut inside"),
])
def test_bad_split_points_are_named(points, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline_split.cut(_mlp(), 2, points)


@pytest.mark.parametrize("points, message", [
    (("blocks.7",), "split point 'blocks.7': 'blocks' (Sequential) has no child '7'; its "
                    "children are ['0', '1', '2', '3']"),
    (("blocks.2.1", "blocks.1"), "must name distinct modules in the order they run, each "
                                 "after the one before; the model runs 'embed', 'blocks.0'"),
    (("blocks", "blocks.0"), "must name distinct modules in the order they run"),
])
def test_bad_nested_split_points_are_named(points, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        pipeline_split.cut(_nested(), len(points) + 1, points)


def test_a_nested_point_that_starts_the_model_is_refused():
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2))
    for points in (("0.0", "1"), ("0", "0.1")):  # "0" is cut: it starts at "0.0"
        with pytest.raises(ValueError, match=re.escape(
                f"split point {points[0]!r} is where the model starts (stage 1 begins with "
                "'0.0'); name the module that starts stage 2, e.g. '0.1'")):
            pipeline_split.cut(model, 3, points)


def test_a_sequential_subclass_with_its_own_forward_is_not_cut_inside():
    class Residual(nn.Sequential):
        def forward(self, x):
            return x + super().forward(x)

    model = nn.Sequential(nn.Linear(4, 4), Residual(nn.Linear(4, 4), nn.Tanh()))
    with pytest.raises(ValueError, match=r"goes through '1', a Residual; only nn.Sequential "
                                         r"containers are cut inside .* Split at '1' itself"):
        pipeline_split.cut(model, 2, ("1.1",))
    assert pipeline_split.cut(model, 2, ("1",)).units == ["0", "1"]


def test_a_module_that_cannot_be_cut_is_refused_with_the_fix():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.b(self.a(x))

    with pytest.raises(TypeError, match=r"received a Net\. Write the model as nn.Sequential"):
        pipeline_split.cut(Net(), 2, None)
    with pytest.raises(TypeError, match="needs its forward traced"):
        pipeline_split.cut(Net(), 2, ("b",))
    with pytest.raises(ValueError, match=r"stages=4\) needs at least 4 children"):
        pipeline_split.cut(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), 4, None)
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
