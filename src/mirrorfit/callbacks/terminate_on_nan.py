"""TerminateOnNaN: stop training on every replica at the first NaN or inf loss."""

from __future__ import annotations

import math
import sys
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite (Keras's callback).

    The loss it reads is the *global* running mean of the epoch (``batch_logs``
    is True, so the trainer reduces the logs over replicas after every step; this
    costs one small all-reduce per step). A NaN on any replica makes that mean NaN
    on all of them, so every replica sees it at the same step and they stop
    together: the current epoch ends after that step, ``on_epoch_end`` callbacks
    still run, and ``fit`` returns normally. The chief prints where it happened.

    Attributes:
        stopped_at: ``(epoch, batch)`` of the step with the invalid loss, or None.

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1))
        >>> model.compile("sgd", "mse")
        >>> x = np.array([[1.0, np.nan]] * 4, "float32"); y = np.zeros((4, 1), "float32")
        >>> cb = mirrorfit.callbacks.TerminateOnNaN()
        >>> _ = model.fit(x, y, batch_size=2, epochs=3, verbose=0, callbacks=[cb])
        Epoch 1, batch 0: invalid loss nan, terminating training.
        >>> cb.stopped_at
        (0, 0)
    """

    batch_logs = True

    def __init__(self, stream: Any = None) -> None:
        super().__init__()
        self.stream = stream
        self.stopped_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.stopped_at = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss) or self.model is None:
            return
        self.model.stop_training = True
        self.stopped_at = (self._epoch, batch)
        if self.model.strategy.is_chief:
            out = self.stream or sys.stdout
            out.write(f"Epoch {self._epoch + 1}, batch {batch}: invalid loss {loss}, "
                      "terminating training.\n")
            out.flush()
