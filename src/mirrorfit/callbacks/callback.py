"""The Callback base class, with Keras's hook names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mirrorfit.strategies.strategy import Strategy
    from mirrorfit.trainer.context import TrainingContext

Logs = dict[str, float]


class TrainableModel(Protocol):
    """What a callback sees of :class:`mirrorfit.Model` (its public face)."""

    stop_training: bool

    @property
    def strategy(self) -> Strategy: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def training_context(self) -> TrainingContext: ...
    def get_weights(self) -> list[np.ndarray]: ...
    def set_weights(self, weights: Any) -> None: ...


class Callback:
    """Hooks called by ``fit``/``evaluate``/``predict`` on **every** worker.

    ``self.model`` is the :class:`mirrorfit.Model`; set ``self.model.stop_training
    = True`` to stop after the current epoch (the workers agree on it). Logs hold
    global values (reduced over replicas). Batch-level hooks receive the running
    global logs only when some callback sets ``batch_logs = True`` (it costs one
    small all-reduce per step); otherwise their ``logs`` are empty.

    Write files or print only where ``self.model.strategy.is_chief`` is True.
    Stateful callbacks implement ``state_dict``/``load_state_dict`` so a backup
    restores them.
    """

    #: set True when this callback reads ``logs`` in batch-level hooks
    batch_logs: bool = False

    def __init__(self) -> None:
        self.model: TrainableModel | None = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: TrainableModel) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_begin(batch, logs)  # Keras's alias

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_end(batch, logs)  # Keras's alias

    def on_test_begin(self, logs: Logs | None = None) -> None: ...
    def on_test_end(self, logs: Logs | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_predict_begin(self, logs: Logs | None = None) -> None: ...
    def on_predict_end(self, logs: Logs | None = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
