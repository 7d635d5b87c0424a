"""Modules FSDP2's ``fully_shard`` cannot shard, refused before anything is sharded
(pure logic, no process group). What torch 2.13 does with each instead is in
``strategies/shardable.py``; the refusal on real workers is in
``test_sharded_workers.py``."""

from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

from mirrorfit.strategies import consistency
from mirrorfit.strategies.shardable import check_shardable
from mirrorfit.strategies.sharded import _units


def _check(module: nn.Module, wrap: tuple | None = None) -> None:
    check_shardable(module, _units(module, wrap))


def _raises(kind: type[Exception], message: str):
    return pytest.raises(kind, match=re.escape(message))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.out = nn.Linear(4, 6, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.emb(codes)))


def test_plain_models_pass():
    _check(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)))
    frozen = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    frozen[0].requires_grad_(False)
    _check(frozen)
    counts = nn.Linear(4, 2)  # an integer parameter without gradient: FSDP2 shards it
    counts.seen = nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)
    _check(nn.Sequential(nn.Linear(4, 4), counts))
    _check(nn.Sequential(nn.Flatten(), nn.Softmax(-1)))  # no parameters at all
    _check(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(4, 4))))


def test_an_uninitialized_lazy_module_is_refused_until_it_ran():
    model = nn.Sequential(nn.Linear(6, 4), nn.LazyLinear(3))
    with _raises(ValueError, "'1.weight' (LazyLinear at '1') is not initialized yet (a lazy "
                             "module before its first forward pass), so it cannot be sharded. "
                             "Run one forward pass with a sample batch before compile"):
        _check(model)
    # the compile fingerprint that every rank compares reads no shape from it
    assert consistency.module_fingerprint(model)[2:] == ["1.weight: uninitialized",
                                                         "1.bias: uninitialized"]
    model(torch.zeros(1, 6))
    _check(model)


def test_a_scalar_parameter_is_refused_with_its_path():
    head = nn.Linear(4, 2)
    head.temperature = nn.Parameter(torch.tensor(1.5))
    with _raises(ValueError, "Parameter '1.temperature' is 0-d (a scalar); FSDP2 shards "
                             "parameters along their first dimension"):
        _check(nn.Sequential(nn.Linear(4, 4), head))
    head.temperature = nn.Parameter(torch.tensor([1.5]))  # the fix: 1-d
    _check(nn.Sequential(nn.Linear(4, 4), head))


def test_a_sparse_embedding_is_refused():
    model = nn.Sequential(OrderedDict(codes=nn.Embedding(6, 4, sparse=True), head=nn.Linear(4, 2)))
    with _raises(ValueError, "'codes' (Embedding) has sparse=True: its gradients are sparse "
                             "tensors, which FSDP2 cannot reduce-scatter. Build it with "
                             "sparse=False, or use MirroredStrategy."):
        _check(model)


def test_weights_tied_across_units_are_refused_with_a_wrap_that_holds_both():
    message = ("'emb.weight' and 'out.weight' are one parameter (tied weights) in different "
               "FSDP units ('emb', 'out')")
    with _raises(ValueError, message):
        _check(_Tied())  # the default units: each child
    with _raises(ValueError, "in different FSDP units ('emb', the model)"):
        _check(_Tied(), ("emb",))  # one side in a unit, the other in the root
    with _raises(ValueError, "e.g. wrap=[] (the whole model is one unit)"):
        _check(_Tied())
    _check(_Tied(), ())  # the fix: both in the root's unit
    # deeper: the common parent is suggested; a ModuleList is not a unit, its parent is
    blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    blocks[1].weight = blocks[0].weight
    model = nn.Sequential(OrderedDict(blocks=blocks, head=nn.Linear(4, 2)))
    with _raises(ValueError, "e.g. wrap=['blocks'] (their common parent)"):
        _check(model, ("blocks.0", "blocks.1"))
    _check(model, ("blocks",))
    layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
    layers[1].bias = layers[0].bias
    stack = nn.Sequential(OrderedDict(body=nn.Sequential(OrderedDict(layers=layers))))
    with _raises(ValueError, "('body.layers.0', 'body.layers.1'); FSDP2 shards each unit's "
                             "parameters apart") as info:
        _check(stack, ("body.layers",))
    assert "wrap=['body']" in str(info.value)


def test_a_module_used_twice_is_one_unit_not_a_tie():
    shared = nn.Linear(4, 4)
    _check(nn.Sequential(shared, nn.Tanh(), shared))


def test_trainable_parameters_of_two_dtypes_in_one_unit_are_refused():
    head = nn.Linear(4, 2)
    head.scale = nn.Parameter(torch.ones(2, dtype=torch.float64))
    model = nn.Sequential(nn.Linear(4, 4), head)
    with _raises(ValueError, "The FSDP unit '1' holds trainable parameters of several dtypes "
                             "('1.weight' float32, '1.scale' float64)"):
        _check(model)
    head.scale.requires_grad_(False)  # FSDP2 compares the trainable ones only
    _check(model)
    head.scale.requires_grad_(True)
    _check(model.double())  # the fix: one dtype
