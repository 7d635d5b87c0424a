"""Loss values against torch and hand computations, and the registry's errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mirrorfit import losses


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(8, 5, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.randint(0, 5, (8,), generator=torch.Generator().manual_seed(1))


def test_sparse_ce_from_probabilities_is_minus_log_p() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    per = losses.get("sparse_categorical_crossentropy").per_sample(probs, torch.tensor([0, 2]))
    torch.testing.assert_close(per, torch.tensor([-math.log(0.7), -math.log(0.5)]))


def test_sparse_ce_clips_zero_probability_like_keras() -> None:
    value = losses.SparseCategoricalCrossentropy()(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert float(value) == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_sparse_ce_from_logits_equals_torch(logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss = losses.get("sparse_categorical_crossentropy", from_logits=True)
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(loss(logits, labels.unsqueeze(1)), F.cross_entropy(logits, labels))



@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_sparse_ce_takes_labels_of_any_integer_type_as_keras_does(
        logits: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> None:
    for from_logits in (True, False):
        loss = losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        y_pred = logits if from_logits else logits.softmax(-1)
        assert torch.equal(loss(y_pred, labels.to(dtype)), loss(y_pred, labels))

def test_sparse_ce_sequence_averages_time_steps_per_sample() -> None:
    x = torch.randn(2, 3, 4)
    y = torch.randint(0, 4, (2, 3))
    per = losses.SparseCategoricalCrossentropy(from_logits=True).per_sample(x, y)
    expected = F.cross_entropy(x.transpose(1, 2), y, reduction="none").mean(dim=1)
    torch.testing.assert_close(per, expected)


def test_categorical_ce_matches_torch_with_label_smoothing(
        logits: torch.Tensor, labels: torch.Tensor) -> None:
    one_hot = F.one_hot(labels, 5).float()
    loss = losses.get("categorical_crossentropy", from_logits=True, label_smoothing=0.1)
    torch.testing.assert_close(loss(logits, one_hot),
                               F.cross_entropy(logits, labels, label_smoothing=0.1))
    probs = losses.CategoricalCrossentropy()(logits.softmax(-1), one_hot)
    torch.testing.assert_close(probs, F.cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)


def test_binary_ce_probabilities_and_logits(logits: torch.Tensor) -> None:
    target = (logits > 0).float()[:, :2]
    x = logits[:, 2:4]
    torch.testing.assert_close(losses.get("binary_crossentropy", from_logits=True)(x, target),
                               F.binary_cross_entropy_with_logits(x, target))
    torch.testing.assert_close(losses.get("binary_crossentropy")(x.sigmoid(), target),
                               F.binary_cross_entropy(x.sigmoid(), target), rtol=1e-5, atol=1e-6)


def test_binary_ce_lines_up_batch_by_one_against_batch() -> None:
    p = torch.tensor([[0.8], [0.4]])
    per = losses.BinaryCrossentropy().per_sample(p, torch.tensor([1, 0]))
    torch.testing.assert_close(per, torch.tensor([-math.log(0.8), -math.log(0.6)]))


@pytest.mark.parametrize(("name", "reference"), [
    ("mse", F.mse_loss), ("mean_squared_error", F.mse_loss),
    ("mae", F.l1_loss), ("mean_absolute_error", F.l1_loss),
    ("huber", F.huber_loss),
])
def test_regression_losses_equal_torch(name: str, reference, logits: torch.Tensor) -> None:
    target = torch.zeros_like(logits).uniform_(-2, 2)
    torch.testing.assert_close(losses.get(name)(logits, target), reference(logits, target))


def test_huber_delta() -> None:
    value = losses.Huber(delta=0.5)(torch.tensor([[2.0], [0.1]]), torch.zeros(2, 1))
    assert float(value) == pytest.approx((0.5 * (2.0 - 0.25) + 0.5 * 0.01) / 2)


def test_kl_divergence_equals_torch(logits: torch.Tensor) -> None:
    p, q = logits.softmax(-1), logits.flip(0).softmax(-1)
    for name in ("kld", "kl_divergence"):
        torch.testing.assert_close(losses.get(name)(p, q), F.kl_div(p.log(), q,
                                                                    reduction="batchmean"))


def test_call_is_mean_of_per_sample_so_shards_weigh_exactly(
        logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss = losses.get("sparse_categorical_crossentropy", from_logits=True)
    whole = loss(logits, labels)
    parts = loss(logits[:3], labels[:3]) * 3 / 8 + loss(logits[3:], labels[3:]) * 5 / 8
    torch.testing.assert_close(parts, whole)
    assert loss.per_sample(logits, labels).shape == (8,)


def test_empty_batch_gives_zero_with_gradient() -> None:
    x = torch.zeros(0, 3, requires_grad=True)
    value = losses.get("sparse_categorical_crossentropy")(x, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert float(value.detach()) == 0.0 and x.grad is not None


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_module_is_wrapped_as_batch_mean(
        reduction: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
    module = nn.CrossEntropyLoss(reduction=reduction)
    loss = losses.get(module)
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(loss.per_sample(logits, labels),
                               F.cross_entropy(logits, labels, reduction="none"))
    assert module.reduction == reduction  # the user's module is not changed


def test_plain_callable_keeps_its_scalar(logits: torch.Tensor, labels: torch.Tensor) -> None:
    loss = losses.get(F.cross_entropy)
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))
    with pytest.raises(TypeError, match="per-sample"):
        loss.per_sample(logits, labels)


def test_instance_is_returned_and_class_is_built() -> None:
    loss = losses.Huber(delta=2.0)
    assert losses.get(loss) is loss
    built = losses.get(losses.CategoricalCrossentropy, from_logits=True)
    assert isinstance(built, losses.CategoricalCrossentropy) and built.from_logits


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'sparse_categorical_crosentropy'") as info:
        losses.get("sparse_categorical_crosentropy")
    assert "'sparse_categorical_crossentropy'" in str(info.value)
    assert "'kl_divergence'" in str(info.value)


def test_bad_identifiers() -> None:
    with pytest.raises(TypeError, match="42"):
        losses.get(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="from_logits"):
        losses.get(losses.Huber(), from_logits=True)
    with pytest.raises(ValueError, match="shapes differ"):
        losses.get("mse")(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("module", [nn.CrossEntropyLoss(), nn.NLLLoss(), nn.MSELoss(),
                                    nn.L1Loss(), nn.SmoothL1Loss(), nn.HuberLoss(),
                                    nn.BCEWithLogitsLoss()])
def test_a_torch_mean_is_run_fused_with_the_per_sample_mean_value(module: nn.Module) -> None:
    torch.manual_seed(0)
    y_pred = torch.randn(8, 4, requires_grad=True)
    if isinstance(module, (nn.CrossEntropyLoss, nn.NLLLoss)):
        y_true = torch.randint(0, 4, (8,))
    else:
        y_true = torch.rand(8, 4)
    loss = losses.get(module)
    value = loss(y_pred, y_true)
    torch.testing.assert_close(value, loss.per_sample(y_pred, y_true).mean())
    # one kernel of torch's own mean, not reduction="none" then sum and divide
    assert "Div" not in value.grad_fn.name() and "Sum" not in value.grad_fn.name()


def test_ignored_targets_and_class_weights_keep_the_plain_per_sample_mean() -> None:
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, -100, 2, -100, 1])
    value = losses.get(nn.CrossEntropyLoss())(logits, labels)
    kept = labels != -100
    # ignored samples count as 0 over all 6 (torch's "mean" would divide by 4)
    torch.testing.assert_close(value, F.cross_entropy(logits[kept], labels[kept],
                                                      reduction="sum") / 6)
    weight = torch.tensor([1.0, 2.0, 3.0])
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    value = losses.get(nn.CrossEntropyLoss(weight=weight))(logits, labels)
    torch.testing.assert_close(value, F.cross_entropy(logits, labels, weight=weight,
                                                      reduction="none").mean())


def test_an_empty_batch_of_a_torch_mean_gives_zero() -> None:
    x = torch.zeros(0, 3, requires_grad=True)
    value = losses.get(nn.CrossEntropyLoss())(x, torch.zeros(0, dtype=torch.long))
    assert float(value.detach()) == 0.0
    assert float(losses.get(nn.MSELoss())(torch.zeros(0, 2), torch.zeros(0, 2))) == 0.0
