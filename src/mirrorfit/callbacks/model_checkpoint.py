"""ModelCheckpoint: Keras's callback, written by the chief only, atomically."""

from __future__ import annotations

import math
import os
import string
import warnings
from pathlib import Path
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.monitor import Monitor
from mirrorfit.checkpoint import atomic, model_file
from mirrorfit.checkpoint.writer import CheckpointWriter
from mirrorfit.strategies.capabilities import ShardedState


class ModelCheckpoint(Callback):
    """Save the model (or its weights) every epoch or every ``save_freq`` steps.

    Every worker runs the callback and takes the same decisions (logs are global
    values); only the chief writes, each file atomically (write, fsync, rename),
    and the others wait at a barrier so all leave the save together. Under a strategy
    that shards the state (``ShardedStrategy``) a model checkpoint is a folder that
    every worker writes its shards into (``torch.distributed.checkpoint``), also
    atomically; ``mirrorfit.load_model`` reads it on one device too.

    Args:
        filepath: a path with Keras's fields, e.g. ``"ckpt/model-{epoch:02d}-{val_loss:.2f}.pt"``:
            ``epoch`` is 1-based, ``batch`` (1-based) is set for step-level saves, and
            any key of the logs may appear.
        monitor: the logs key that ``save_best_only`` compares.
        verbose: 1 prints a line per save on the chief.
        save_best_only: write only when ``monitor`` improves (a constant ``filepath``
            then always holds the best model).
        save_weights_only: write the module's weights only (a 'weights' file);
            otherwise weights, optimizer state and Keras-name compile arguments.
        mode: 'min', 'max' or 'auto' (max for accuracy-like names, else min).
        save_freq: 'epoch', or a number of training steps between saves.
        initial_value_threshold: the value ``monitor`` must beat first.
        keep: keep only the ``keep`` most recent files this callback wrote.
        async_save: copy the state to host memory and write in a background thread.

    Example:
        >>> cb = ModelCheckpoint("ckpt/model-{epoch:02d}.pt", keep=3)
        >>> model.fit(x, y, epochs=10, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str | int = "epoch", initial_value_threshold: float | None = None,
                 *, keep: int | None = None, async_save: bool = False) -> None:
        super().__init__()
        _check_args(save_freq, keep)
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self._monitor = Monitor(monitor, mode, owner="ModelCheckpoint")
        self._monitor.reset(initial_value_threshold)
        self.mode = self._monitor.mode
        self.save_freq = save_freq
        self.keep = keep
        self.saved: list[str] = []
        self._writer = CheckpointWriter(async_save)
        self._epoch = 0
        self._since_save = 0
        fields = {f for _, f, _, _ in string.Formatter().parse(self.filepath) if f}
        # step-level saves that need metric values ask the trainer for batch logs
        self.batch_logs = save_freq != "epoch" and (save_best_only or bool(fields - {"epoch",
                                                                                     "batch"}))

    # --- hooks --------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            return
        self._since_save += 1
        if self._since_save >= int(self.save_freq):
            self._since_save = 0
            self._save(self._epoch, batch, logs or {})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._writer.wait()

    # --- saving -------------------------------------------------------------------------
    def _save(self, epoch: int, batch: int | None, logs: Logs) -> None:
        assert self.model is not None
        strategy = self.model.strategy
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):  # keep the last good checkpoint
            if strategy.is_chief and self.verbose:
                print(f"\nEpoch {epoch + 1}: loss is {loss}, not saving.", flush=True)
            return
        if self.save_best_only and not self._improved(logs, strategy.is_chief):
            return
        path = self.format_path(epoch, batch, logs)
        stale = self._remember(path)
        context = self.model.training_context
        if isinstance(strategy, ShardedState) and not self.save_weights_only:
            # every rank writes its own shards into a folder: nothing is gathered
            content = model_file.sharded_model_content(strategy, context)
            strategy.save_checkpoint(content, path, "model", self._writer,
                                     then=lambda: _remove_all(stale))
            if strategy.is_chief and self.verbose:
                print(f"\nEpoch {epoch + 1}: saving model to {path}", flush=True)
            return
        if self.save_weights_only:  # collective where the strategy gathers shards
            content, kind = model_file.weights_content(strategy, context.module), "weights"
        else:
            content = model_file.model_content(strategy, context.module, context)
            kind = "model"
        if strategy.is_chief:
            self._writer.save(content, path, kind, then=lambda: _remove_all(stale))
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: saving model to {path}", flush=True)
        strategy.barrier()

    def _improved(self, logs: Logs, chief: bool) -> bool:
        current = logs.get(self.monitor)
        if current is None:
            if chief:
                warnings.warn(f"ModelCheckpoint: save_best_only needs {self.monitor!r} in the "
                              f"logs, which hold {sorted(logs)}; skipping this save. Pass "
                              "validation_data or monitor one of those keys.", stacklevel=3)
            return False
        return self._monitor.update(current)

    @property
    def best(self) -> float:
        """The best value of ``monitor`` saved so far (Keras's attribute)."""
        return self._monitor.best

    @best.setter
    def best(self, value: float) -> None:
        self._monitor.best = float(value)

    def format_path(self, epoch: int, batch: int | None, logs: Logs) -> str:
        """``filepath`` with Keras's fields filled in (``epoch`` and ``batch`` 1-based).

        Raises:
            KeyError: ``filepath`` names a field that is not in the logs.
        """
        fields = dict(logs)
        fields["epoch"] = epoch + 1
        if batch is not None:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as exc:
            raise KeyError(f"ModelCheckpoint filepath {self.filepath!r} names {exc.args[0]!r}, "
                           f"which is not available here; available: {sorted(fields)}. Pass "
                           "validation_data for val_ keys or change the filepath.") from None

    def _remember(self, path: str) -> list[str]:
        """Record ``path`` as the newest file; return the files that rotation drops."""
        self.saved = [p for p in self.saved if p != path] + [path]
        if self.keep is None or len(self.saved) <= self.keep:
            return []
        stale, self.saved = self.saved[:-self.keep], self.saved[-self.keep:]
        return stale

    # --- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "saved": list(self.saved), "since_save": self._since_save}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.saved = list(state["saved"])
        self._since_save = int(state["since_save"])


def _remove_all(paths: list[str]) -> None:
    for p in paths:
        atomic.remove(Path(p))


def check_save_freq(save_freq: str | int) -> None:
    """Keras's ``save_freq``: 'epoch' or a positive number of steps.

    Raises:
        ValueError: anything else, echoed.
    """
    if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)
                                 or save_freq < 1):
        raise ValueError(f"save_freq must be 'epoch' or a positive number of steps; received "
                         f"{save_freq!r}.")


def _check_args(save_freq: str | int, keep: int | None) -> None:
    check_save_freq(save_freq)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be None or a positive integer; received {keep!r}.")
