"""Metric values, Keras name resolution, and exact merging of states."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mirrorfit import metrics


def _data(n: int = 11, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, classes, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_sparse_accuracy_counts() -> None:
    m = metrics.SparseCategoricalAccuracy()
    m.update(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 0, 1]))
    assert m.result() == pytest.approx(1 / 3)
    assert m.state.dtype == torch.float64 and m.state.tolist() == [1.0, 3.0]


@pytest.mark.parametrize("name", ["accuracy", "acc", "sparse_categorical_accuracy",
                                  "sparse_top_k_categorical_accuracy", "mse", "mae"])
def test_two_halves_merge_to_the_whole_exactly(name: str) -> None:
    x, y = _data(n=13)
    if name in ("mse", "mae"):
        y = torch.randn(13, 4)
    whole, first, second = (metrics.get(name) for _ in range(3))
    whole.update(x, y)
    first.update(x[:6], y[:6])
    second.update(x[6:], y[6:])
    summed = first.state + second.state  # what all_reduce(SUM) computes
    first.set_state(summed)
    assert first.result() == whole.result()
    second.reset()
    second.merge(whole)
    assert second.result() == whole.result()


def test_accuracy_is_by_counts_not_mean_of_means() -> None:
    a, b = metrics.get("accuracy"), metrics.get("accuracy")
    a.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))  # 1 of 1
    b.update(torch.tensor([[1.0, 0.0]] * 3), torch.tensor([1, 1, 0]))  # 1 of 3
    a.merge(b)
    assert a.result() == 0.5


@pytest.mark.parametrize(("y_pred", "y_true", "kind", "expected"), [
    (torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]), "sparse_categorical", 0.5),
    (torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([[1], [0]]), "sparse_categorical", 1.0),
    (torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
     "categorical", 0.5),
    (torch.tensor([[0.7], [0.2], [0.6]]), torch.tensor([1, 0, 0]), "binary", 2 / 3),
    (torch.tensor([0.7, 0.2]), torch.tensor([1.0, 1.0]), "binary", 0.5),
])
def test_accuracy_resolves_like_keras(y_pred: torch.Tensor, y_true: torch.Tensor, kind: str,
                                      expected: float) -> None:
    m = metrics.Accuracy()
    m.update(y_pred, y_true)
    assert m.kind == kind
    assert m.result() == pytest.approx(expected)


def test_categorical_and_binary_accuracy() -> None:
    x, y = _data()
    m = metrics.get("categorical_accuracy")
    m.update(x, F.one_hot(y, 4).float())
    assert m.result() == pytest.approx((x.argmax(1) == y).double().mean().item())
    b = metrics.BinaryAccuracy(threshold=0.0)
    b.update(torch.tensor([-1.0, 2.0, 0.5]), torch.tensor([0, 1, 0]))
    assert b.result() == pytest.approx(2 / 3)


def test_top_k() -> None:
    y_pred = torch.tensor([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1]])
    sparse = metrics.SparseTopKCategoricalAccuracy(k=2)
    sparse.update(y_pred, torch.tensor([2, 2]))
    assert sparse.result() == 0.5
    dense = metrics.get("top_k_categorical_accuracy")  # k=5 > 3 classes: every sample hits
    dense.update(y_pred, F.one_hot(torch.tensor([2, 2]), 3))
    assert dense.result() == 1.0


def test_sample_weight_and_regression_metrics() -> None:
    m = metrics.get("mse")
    m.update(torch.tensor([[1.0, 3.0], [0.0, 0.0]]), torch.zeros(2, 2),
             sample_weight=torch.tensor([1.0, 3.0]))
    assert m.result() == pytest.approx(5.0 / 4)  # per-sample mse [5, 0], weights [1, 3]
    mae = metrics.MeanAbsoluteError()
    mae.update(torch.tensor([1.0, -3.0]), torch.zeros(2))
    assert mae.result() == 2.0


def test_mean_for_losses_and_state_dict_round_trip() -> None:
    m = metrics.Mean("loss")
    assert m.result() == 0.0
    m.update_value(torch.tensor(3.0, requires_grad=True) * 1, 4)
    m.update_value(1.0, 1)
    assert m.result() == 0.8
    fresh = metrics.Mean("loss")
    fresh.load_state_dict(m.state_dict())
    assert fresh.result() == 0.8
    m.reset()
    assert m.state.tolist() == [0.0, 0.0]


def test_callable_is_a_batch_size_weighted_mean() -> None:
    def abs_err(y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (y_pred - y_true).abs().mean()

    m = metrics.get(abs_err)
    m.update(torch.ones(3), torch.zeros(3))
    m.update(torch.zeros(1), torch.zeros(1))
    assert m.name == "abs_err" and m.result() == 0.75


def test_history_names() -> None:
    assert metrics.get("accuracy").name == "accuracy"
    assert metrics.get("acc").name == "acc"
    assert metrics.get("sparse_categorical_accuracy").name == "sparse_categorical_accuracy"
    assert metrics.get("mse").name == "mse"
    instance = metrics.CategoricalAccuracy(name="cat")
    assert metrics.get(instance) is instance and instance.name == "cat"
    assert metrics.get("accuracy") is not metrics.get("accuracy")


def test_errors_echo_the_value() -> None:
    with pytest.raises(ValueError, match="'accuracyy'") as info:
        metrics.get("accuracyy")
    assert "'sparse_top_k_categorical_accuracy'" in str(info.value)
    with pytest.raises(TypeError, match=r"3\.5"):
        metrics.get(3.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"received \(3,\)"):
        metrics.Mean().set_state(torch.zeros(3))
    with pytest.raises(ValueError, match=r"received y_pred \(2, 3\), y_true \(2, 4\)"):
        metrics.get("accuracy").update(torch.zeros(2, 3), torch.zeros(2, 4))
