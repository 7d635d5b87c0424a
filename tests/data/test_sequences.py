"""Handle sequences on their own (no data read): lazy batch views and the shuffle buffer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from mirrorfit.data.sequences import _CUT_AHEAD, Blocks, _buffer_shuffle, blocks


@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 32 * _CUT_AHEAD + 5, 32 * 3 * _CUT_AHEAD])
def test_blocks_are_the_views_split_makes(n: int) -> None:
    handles = torch.randperm(n) if n else torch.zeros(0, dtype=torch.int64)
    cut = blocks(handles, 32)
    expected = list(handles.split(32)) if n else []  # split gives one empty piece; no batch here
    assert isinstance(cut, Blocks) and len(cut) == len(expected)
    got = list(cut)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected]
    storage = handles.untyped_storage().data_ptr()
    assert all(b.untyped_storage().data_ptr() == storage for b in got)  # views, no copies
    assert [cut[i].tolist() for i in range(-len(cut), len(cut))] == \
        [b.tolist() for b in expected[-len(cut):] + expected]


def test_blocks_slices_and_errors() -> None:
    handles = torch.arange(100)
    cut = Blocks(handles, 7)  # 15 blocks, the last of 2
    assert [b.tolist() for b in cut[3:5]] == [list(range(21, 28)), list(range(28, 35))]
    assert isinstance(cut[3:5], Blocks) and len(cut[13:]) == 2 and len(cut[9:2]) == 0
    assert [b[0].item() for b in cut[::5]] == [0, 35, 70]
    assert cut[-1].tolist() == [98, 99]
    with pytest.raises(IndexError, match="block 15 of 15"):
        cut[15]


def _reference(chunks: list[Any], size: int, rng: np.random.Generator) -> list[Any]:
    """The element-wise definition of tf.data's shuffle buffer (the order before vectorising)."""
    buffer: list[Any] = []
    out: list[Any] = []
    for chunk in chunks:
        handles = chunk.tolist() if isinstance(chunk, torch.Tensor) else list(chunk)
        for handle, j in zip(handles, rng.integers(0, size, len(handles)).tolist(), strict=True):
            if len(buffer) < size:
                buffer.append(handle)
                continue
            out.append(buffer[j])
            buffer[j] = handle
    return out + [buffer[i] for i in rng.permutation(len(buffer)).tolist()]


def _flat(chunks: Iterator[Any]) -> list[Any]:
    return [h for c in chunks for h in (c.tolist() if isinstance(c, torch.Tensor) else c)]


@pytest.mark.parametrize("size", [1, 5, 64, 99, 100, 101, 10_000])
@pytest.mark.parametrize("as_tensor", [True, False])
def test_buffer_shuffle_keeps_the_element_wise_order(size: int, as_tensor: bool) -> None:
    cuts = [0, 13, 13, 40, 77, 100]  # uneven chunks, one of them empty
    whole = torch.randperm(100, generator=torch.Generator().manual_seed(1))
    chunks = [whole[a:b] if as_tensor else whole[a:b].tolist()
              for a, b in itertools.pairwise(cuts)]
    for seed in range(3):
        got = list(_buffer_shuffle(iter(chunks), size, np.random.default_rng(seed)))
        assert all(isinstance(c, torch.Tensor) == as_tensor for c in got)
        assert _flat(iter(got)) == _reference(chunks, size, np.random.default_rng(seed))
    assert list(_buffer_shuffle(iter([]), size, np.random.default_rng(0))) == []
