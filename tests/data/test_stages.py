"""Every constructor and stage of Dataset, iterated plainly (no strategy), and their errors."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

import mirrorfit.data.dataset
from mirrorfit.data import INFINITE, UNKNOWN, Dataset, MapFunctionError
from tests.data.helpers import Counting, ids


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(range(3))


def flat_y(ds: Dataset) -> list[int]:
    return [v for batch in ds for v in batch[1].reshape(-1).tolist()]


def test_docstring_examples_run() -> None:
    assert doctest.testmod(mirrorfit.data.dataset).failed == 0


# -- constructors ---------------------------------------------------------------------------

def test_from_tensor_slices_numpy_tuple_batches_in_order() -> None:
    x = np.arange(10, dtype=np.float64).reshape(5, 2)
    batches = list(Dataset.from_tensor_slices((x, np.arange(5))).batch(2))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0][0].dtype == torch.float32  # float64 numpy becomes float32, as in fit
    assert batches[0][0].tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_from_tensor_slices_nested_dict_and_single_tensor() -> None:
    x = {"a": torch.arange(4), "b": (torch.zeros(4, 2), torch.ones(4))}
    (feat, _), = list(Dataset.from_tensor_slices((x, torch.arange(4))).batch(4))
    assert feat["a"].tolist() == [0, 1, 2, 3] and feat["b"][0].shape == (4, 2)
    assert [t for (t,) in Dataset.from_tensor_slices(torch.arange(3))] == [0, 1, 2]


def test_unbatched_iteration_yields_samples_as_tuples() -> None:
    x, y = ids(3)
    samples = list(Dataset.from_tensor_slices((x, y)))
    assert [int(s[1]) for s in samples] == [0, 1, 2] and samples[2][0].tolist() == [2.0, -2.0]


def test_from_torch_reads_dataset_items() -> None:
    xb, yb = next(iter(Dataset.from_torch(Counting(5)).batch(3)))
    assert yb.tolist() == [0, 1, 2] and xb[:, 1].tolist() == [0.0, -1.0, -2.0]


def test_from_generator_calls_fn_afresh_each_pass() -> None:
    ds = Dataset.from_generator(lambda: ((torch.tensor([i]), i) for i in range(5))).batch(2)
    assert flat_y(ds) == [0, 1, 2, 3, 4] and flat_y(ds) == [0, 1, 2, 3, 4]
    assert ds.cardinality() == UNKNOWN


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Dataset.from_tensor_slices((torch.zeros(3), torch.zeros(4))), r"x\[0\]: 3, x\[1\]: 4"),
    (lambda: Dataset.from_tensor_slices(torch.tensor(1.0)), "scalar"),
    (lambda: Dataset.from_tensor_slices("abc"), "received str"),
    (lambda: Dataset.from_generator(iter([1, 2])), "fresh iterator"),
    (lambda: Dataset.from_torch(_Stream()), "from_generator"),
])
def test_constructor_errors_name_the_problem(make, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# -- selection stages ----------------------------------------------------------------------

def test_take_skip_repeat_on_samples_and_batches() -> None:
    ds = Dataset.from_tensor_slices(ids(10))
    assert flat_y(ds.skip(2).take(5).batch(2)) == [2, 3, 4, 5, 6]
    assert flat_y(ds.take(3).repeat(2).batch(4)) == [0, 1, 2, 0, 1, 2]
    assert [b[1].tolist() for b in ds.batch(3).skip(1).take(2)] == [[3, 4, 5], [6, 7, 8]]
    assert ds.take(3).repeat(2).batch(4).cardinality() == 2
    assert ds.repeat().cardinality() == INFINITE
    assert flat_y(ds.repeat().take(12).batch(5)) == [*range(10), 0, 1]


def test_batch_drop_remainder() -> None:
    ds = Dataset.from_tensor_slices(ids(7)).batch(3, drop_remainder=True)
    assert [b[1].tolist() for b in ds] == [[0, 1, 2], [3, 4, 5]] and len(ds) == 2


def test_full_shuffle_is_a_permutation_reshuffled_each_pass() -> None:
    ds = Dataset.from_tensor_slices(ids(50)).shuffle(seed=3).batch(8)
    first, second = flat_y(ds), flat_y(ds)
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert first != second != list(range(50))


def test_buffered_shuffle_is_a_local_permutation() -> None:
    ds = Dataset.from_tensor_slices(ids(100)).shuffle(buffer_size=4, seed=0).batch(10)
    order = flat_y(ds)
    assert sorted(order) == list(range(100)) and order != list(range(100))
    # a buffer of 4 emits element i no earlier than position i - 4
    assert all(pos >= value - 4 for pos, value in enumerate(order))


def test_shuffle_before_repeat_reshuffles_each_pass() -> None:
    order = flat_y(Dataset.from_tensor_slices(ids(20)).shuffle(seed=1).repeat(2).batch(40))
    assert sorted(order[:20]) == sorted(order[20:]) == list(range(20))
    assert order[:20] != order[20:]


def test_shuffle_after_batch_moves_whole_batches() -> None:
    batches = [b[1].tolist() for b in Dataset.from_tensor_slices(ids(9)).batch(3).shuffle(seed=2)]
    assert sorted(batches) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


# -- map ------------------------------------------------------------------------------------

def test_map_before_batch_sees_samples_after_batch_sees_batches() -> None:
    seen: list[tuple[int, ...]] = []

    def per_sample(x, y):
        seen.append(tuple(x.shape))
        return x, y * 10

    def per_batch(x, y):
        seen.append(tuple(x.shape))
        return x, y + 1

    out = flat_y(Dataset.from_tensor_slices(ids(4)).map(per_sample).batch(2).map(per_batch))
    assert out == [1, 11, 21, 31]
    assert seen == [(2,), (2,), (2, 2), (2,), (2,), (2, 2)]


def test_map_single_element_and_dict_elements() -> None:
    ds = Dataset.from_tensor_slices({"a": torch.arange(3)}).map(lambda d: d["a"] * 2).batch(3)
    assert [t.tolist() for (t,) in ds] == [[0, 2, 4]]


@pytest.mark.parametrize("workers", [2, -1])
def test_parallel_map_keeps_order(workers: int) -> None:
    ds = Dataset.from_tensor_slices(ids(40)).map(lambda x, y: (x, y * 2), workers).batch(3)
    assert flat_y(ds) == [2 * i for i in range(40)]


def test_map_error_names_the_sample_index() -> None:
    def bad(x, y):
        if int(y) == 6:
            raise KeyError("boom")
        return x, y

    ds = Dataset.from_tensor_slices(ids(10)).shuffle(seed=0).map(bad).batch(4)
    with pytest.raises(MapFunctionError, match=r"bad raised KeyError.*sample at index 6") as info:
        list(ds)
    assert isinstance(info.value.__cause__, KeyError)


def test_batch_map_error_names_the_batch_indices() -> None:
    ds = Dataset.from_tensor_slices(ids(6)).batch(3).map(lambda x, y: 1 / 0)
    with pytest.raises(MapFunctionError, match=r"indices \[0, 1, 2\] \(3 in all\)"):
        list(ds)


def test_unstackable_samples_name_the_batch() -> None:
    ds = Dataset.from_generator(lambda: iter([torch.zeros(2), torch.zeros(3)])).batch(2)
    with pytest.raises(RuntimeError, match=r"generator elements at indices \[0, 1\].*pad"):
        list(ds)


# -- argument errors -----------------------------------------------------------------------

@pytest.mark.parametrize(("build", "match"), [
    (lambda ds: ds.shuffle(0), r"received 0.*buffer_size=None"),
    (lambda ds: ds.shuffle(-3), r"received -3"),
    (lambda ds: ds.shuffle(seed="1"), r"received '1'"),
    (lambda ds: ds.batch(0), r"batch\(global_batch\).*received 0.*batch\(32\)"),
    (lambda ds: ds.batch(-4), r"received -4"),
    (lambda ds: ds.batch(2.5), r"received 2.5"),
    (lambda ds: ds.batch(2).batch(2), "already batched"),
    (lambda ds: ds.repeat().shuffle(), "infinite"),
    (lambda ds: ds.repeat().cache(), "infinite"),
    (lambda ds: ds.take(-1), r"received -1"),
    (lambda ds: ds.prefetch(-5), r"received -5"),
    (lambda ds: ds.map(3), "callable"),
    (lambda ds: ds.map(abs, num_parallel_calls=0), r"received 0"),
    (lambda ds: ds.cache(on_mismatch="ignore"), r"received 'ignore'"),
])
def test_bad_arguments_echo_the_value(build, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build(Dataset.from_tensor_slices(ids(4)))


def test_len_and_repr() -> None:
    ds = Dataset.from_tensor_slices(ids(10)).shuffle().batch(4)
    assert len(ds) == 3
    assert repr(ds) == "Dataset(slices(10) -> shuffle(None) -> batch(4))"
    with pytest.raises(TypeError, match="infinite"):
        len(ds.repeat())


def test_unseeded_shuffle_follows_torch_manual_seed_and_seeded_pipelines_leave_it_alone() -> None:
    ds = Dataset.from_tensor_slices(ids(30)).shuffle().batch(30)
    torch.manual_seed(5)
    first = flat_y(ds)
    torch.manual_seed(5)
    assert flat_y(Dataset.from_tensor_slices(ids(30)).shuffle().batch(30)) == first
    state = torch.get_rng_state()
    flat_y(Dataset.from_tensor_slices(ids(30)).shuffle(seed=1).batch(30))
    assert torch.equal(torch.get_rng_state(), state)
