"""The trainer's metric tracker: the unchecked hot path gives the checked path's values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mirrorfit
from mirrorfit.trainer.tracker import Tracker


def _batches(seed: int, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    for size in (7, 5, 8, 3, 6)[:n]:
        yield torch.randn(size, 4, generator=g), torch.randint(0, 4, (size,), generator=g)


def test_hot_path_matches_numpy_and_is_rechecked_after_reset_and_load() -> None:
    tracker = Tracker(["accuracy", "sparse_top_k_categorical_accuracy"],
                      mirrorfit.OneDeviceStrategy("cpu"))
    losses, hits, top, total = 0.0, 0, 0, 0
    for i, (pred, y) in enumerate(_batches(0)):
        loss = torch.tensor(0.1 * (i + 1))
        tracker.update(loss, pred, y, len(y))
        assert tracker._hot  # every update after the first skips the checks
        losses += 0.1 * (i + 1) * len(y)
        hits += int((pred.argmax(1) == y).sum())
        top += len(y)  # k=5 >= 4 classes: every label is in the top k
        total += len(y)
    logs = tracker.result()
    assert logs["accuracy"] == hits / total
    assert logs["sparse_top_k_categorical_accuracy"] == top / total == 1.0
    np.testing.assert_allclose(logs["loss"], losses / total, rtol=1e-6)
    state = tracker.state_dict()
    tracker.reset()
    assert not tracker._hot
    tracker.load_state_dict(state)
    assert not tracker._hot and tracker.result() == logs


def test_hot_path_still_squeezes_and_refuses_label_shapes() -> None:
    tracker = Tracker(["accuracy"], mirrorfit.OneDeviceStrategy("cpu"))
    pred, y = next(_batches(1))
    tracker.update(torch.tensor(1.0), pred, y, len(y))
    tracker.update(torch.tensor(1.0), pred, y[:, None], len(y))  # (n, 1) labels
    assert tracker.result()["accuracy"] == float((pred.argmax(1) == y).double().mean())
    with pytest.raises(ValueError, match=r"received y_pred \(7, 4\), y_true \(7, 2\)"):
        tracker.update(torch.tensor(1.0), pred, torch.zeros(7, 2, dtype=torch.long), 7)


def test_weighted_updates_take_the_checked_path() -> None:
    tracker = Tracker([], mirrorfit.OneDeviceStrategy("cpu"), weighted=["accuracy"])
    pred, y = next(_batches(2))
    tracker.update(torch.tensor(1.0), pred, y, len(y))
    w = torch.zeros(len(y))
    w[0] = 1.0
    tracker.update(torch.tensor(1.0), pred, y, len(y), w)
    assert not tracker._hot
    hits = (pred.argmax(1) == y).double()
    assert tracker.result()["accuracy"] == pytest.approx(float(hits.sum() + hits[0]) / (len(y) + 1))


def test_resumed_tracker_adds_exactly_what_the_uninterrupted_one_adds() -> None:
    """After load_state_dict the first update takes the checked path; its loss sum must
    round like the hot path's, or a resumed run's loss drifts in the last bits."""
    strategy = mirrorfit.OneDeviceStrategy("cpu")
    whole, resumed = Tracker(["accuracy"], strategy), Tracker(["accuracy"], strategy)
    losses = torch.arange(1, 6) / 3  # float32 values whose products with n round
    for i, (pred, y) in enumerate(_batches(4)):
        whole.update(losses[i], pred, y, len(y))
        if i == 2:
            resumed.load_state_dict(whole.state_dict())
        elif i > 2:
            resumed.update(losses[i], pred, y, len(y))
    assert resumed.result() == whole.result()  # exact, not approximate


def test_an_output_that_still_requires_grad_takes_the_hot_path_detached() -> None:
    # the strategy hands the output over undetached (a detach costs ~1% of a small step)
    tracker = Tracker(["accuracy"], mirrorfit.OneDeviceStrategy("cpu"))
    hits = total = 0
    for pred, y in _batches(1):
        out = pred.requires_grad_()
        tracker.update(torch.tensor(0.5), out * 1.0, y, len(y))
        assert tracker._hot
        hits, total = hits + int((pred.argmax(1) == y).sum()), total + len(y)
    assert tracker.result()["accuracy"] == hits / total
    assert not any(m.state.requires_grad for m in tracker.all())


def test_loss_alone_takes_the_hot_path_and_never_reads_the_output() -> None:
    tracker = Tracker([], mirrorfit.OneDeviceStrategy("cpu"))
    for i in range(3):
        tracker.update(torch.tensor(float(i)), None, None, 2)
        assert tracker._hot
    assert tracker.result() == {"loss": 1.0}
    tracker.reset()
    assert not tracker._hot


def test_plain_metrics_ignore_sample_weights_and_a_weighted_twin_is_renamed() -> None:
    tracker = Tracker(["accuracy"], mirrorfit.OneDeviceStrategy("cpu"), weighted=["accuracy"])
    pred, y = next(_batches(3))
    w = torch.zeros(len(y))
    w[0] = 1.0
    tracker.update(torch.tensor(1.0), pred, y, len(y), w)
    hits = (pred.argmax(1) == y).double()
    logs = tracker.result()
    assert logs["accuracy"] == pytest.approx(float(hits.mean()))
    assert logs["weighted_accuracy"] == float(hits[0])
