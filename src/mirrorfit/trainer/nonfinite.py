"""Warn once when the training loss turns NaN or infinite and no ``TerminateOnNaN`` stops it.

Without the callback, a NaN loss (from NaN inputs, or a learning rate that diverges)
trains on to NaN weights and ``fit`` ends normally. The trainer therefore checks the
loss where it reads the logs anyway and warns once, on the chief, with the epoch,
the batch and the usual fixes.

Cost: nothing per step. The check is ``math.isfinite`` on the float that
``Tracker.result()`` has just returned: that reduction and its device-to-host copy
happen anyway for the logs (at every step only when a callback asks for batch logs,
about 20 times an epoch with the progress bar, once at every epoch's end). No
device operation, host synchronization or collective is added. Because the
tracker's loss is a running sum, one non-finite batch keeps it non-finite until the
epoch's reset, so the next read sees it; the warning then names the batch it was
seen at and, when reads are sparse, the last batch known to be finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from mirrorfit import advice
from mirrorfit.callbacks.terminate_on_nan import TerminateOnNaN


class NonFiniteLossWatch:
    """Remembers the last batch with a finite running loss; warns at the first that is not.

    Args:
        chief: only the chief warns (every replica reads the same global loss).
    """

    def __init__(self, chief: bool) -> None:
        self.chief = chief
        self.warned = False  # once per compiled model: later epochs stay NaN anyway
        self._armed = False
        self._finite_through = -1  # the last batch of this epoch known to be finite

    def start_fit(self, callbacks: Iterable[Any]) -> None:
        """Arm for a ``fit`` whose callbacks do not already stop on NaN (TerminateOnNaN
        prints its own message)."""
        self._armed = self.chief and not any(isinstance(c, TerminateOnNaN) for c in callbacks)

    def start_epoch(self, step: int) -> None:
        """The epoch starts (or resumes) at ``step``; earlier batches count as finite."""
        self._finite_through = step - 1

    def check(self, logs: dict[str, float], epoch: int, batch: int) -> None:
        """Look at ``logs['loss']``, read after ``batch`` (0-based) of ``epoch`` (0-based)."""
        loss = logs.get("loss")
        if not self._armed or self.warned or loss is None:
            return
        if math.isfinite(loss):
            self._finite_through = batch
            return
        self.warned = True
        where = f"epoch {epoch + 1}, batch {batch}"
        if self._finite_through < batch - 1:
            where += (f" (the first bad batch lies between batch {self._finite_through + 1} "
                      f"and batch {batch}: the loss is checked only where it is logged, so no "
                      "step waits for the check)")
        advice.warn(
            f"mirrorfit: the training loss is {loss} at {where}; training goes on, and the "
            "weights are probably no longer finite. Add mirrorfit.callbacks.TerminateOnNaN() "
            "to stop at the first bad step, try a lower learning rate, and check the inputs "
            "for NaN or inf values (e.g. numpy.isfinite(x).all()).", RuntimeWarning)
