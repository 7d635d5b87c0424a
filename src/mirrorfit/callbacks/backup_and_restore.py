"""BackupAndRestore: resume an interrupted ``fit`` at the exact step it reached."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.model_checkpoint import check_save_freq
from mirrorfit.checkpoint import atomic
from mirrorfit.checkpoint.state import capture_training_state, restore_training_state
from mirrorfit.checkpoint.writer import CheckpointWriter
from mirrorfit.strategies.capabilities import ShardedState
from mirrorfit.trainer.context import TrainingContext

BACKUP_NAME = "backup.pt"


class BackupAndRestore(Callback):
    """Back up the whole training state; when the same script runs again, resume.

    A backup holds the module weights, optimizer state, the trainer's position
    (epoch, step), data seed and stream state, the running metrics, every
    callback's state (History included) and every rank's RNG states. Because the
    order of samples depends only on (seed, epoch), a resumed run continues with
    the very next global batch, on any number of replicas: each sample of the
    interrupted epoch is trained on exactly once, and on the same replica count
    the final weights equal an uninterrupted run's bit for bit (CPU).

    The chief writes ``backup_dir/backup.pt`` atomically (a crash mid-save
    leaves the previous backup loadable); the other workers wait at a barrier.
    Under a strategy that shards the state, ``backup.pt`` is a folder that every
    worker writes its shards into (``torch.distributed.checkpoint``), also atomically.
    On ``fit`` start every worker loads it (``backup_dir`` must be visible to all
    workers) onto its own device. Callbacks listed *after* this one that reset
    their state in ``on_train_begin`` must honour a ``load_state_dict`` made just
    before (as History does); list BackupAndRestore last to be safe.

    Args:
        backup_dir: where the backup lives; created when needed.
        save_freq: 'epoch' (at each epoch boundary) or a number of training steps
            (rounded up to the next optimizer update under ``steps_per_update``).
        delete_checkpoint: delete the backup when ``fit`` completes.
        async_save: copy the state to host memory and write in a background thread.

    Example:
        >>> backup = BackupAndRestore("/shared/job42/backup", save_freq=100)
        >>> model.fit(x, y, epochs=10, callbacks=[backup])  # doctest: +SKIP
    """

    def __init__(self, backup_dir: str | os.PathLike[str], save_freq: str | int = "epoch",
                 delete_checkpoint: bool = True, *, async_save: bool = False) -> None:
        super().__init__()
        check_save_freq(save_freq)
        self.backup_dir = Path(backup_dir)
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self._writer = CheckpointWriter(async_save)
        self._since_save = 0
        self._last_position: tuple[int, int] | None = None
        self._has_backup = False  # the file holds _last_position (same on every worker)

    @property
    def path(self) -> Path:
        """The backup file."""
        return self.backup_dir / BACKUP_NAME

    # --- hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs: Logs | None = None) -> None:
        context = self._context()
        strategy = context.strategy
        exists = None
        if strategy.is_chief:
            atomic.remove_stale_temps(self.path)  # a writer killed mid-save left these
            exists = self.path.exists()
        self._has_backup = bool(strategy.broadcast_object(exists))
        if self._has_backup:  # every worker takes the same branch
            state = strategy.load_checkpoint(self.path, ("backup",), self._template(context))
            restore_training_state(context, state, context.callbacks, repr(str(self.path)))
            if strategy.is_chief:
                print(_resume_message(self.path, state, strategy.num_replicas_in_sync),
                      flush=True)
        self._since_save = 0
        self._last_position = self._position()

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        # the boundary after epoch e-1: every on_epoch_end (History, ...) has run by now
        if self.save_freq == "epoch" and self._position() != self._last_position:
            self._save()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            return
        self._since_save += 1
        context = self._context()
        if (self._since_save >= int(self.save_freq)
                and context.step % context.steps_per_update == 0):
            self._save()

    def on_train_end(self, logs: Logs | None = None) -> None:
        assert self.model is not None
        strategy = self.model.strategy
        self._writer.wait()
        if self.delete_checkpoint:
            if strategy.is_chief:
                atomic.remove(self.path)
                _remove_if_empty(self.backup_dir)
            strategy.barrier()
        elif self._position() != self._last_position:
            self._save()
            self._writer.wait()

    def on_preemption(self) -> bool:
        """Called by ``fit`` on every worker at the step where they agreed to stop for a
        preemption signal (``cluster.preemption``): back up there (unless the backup
        already holds this step) and wait for the write. Returns True (state saved)."""
        if not (self._has_backup and self._position() == self._last_position):
            self._save()
        self._writer.wait()
        return True

    # --- helpers ------------------------------------------------------------------------
    def _save(self) -> None:
        context = self._context()
        state = capture_training_state(context, context.callbacks or [self])  # collective
        context.strategy.save_checkpoint(state or {}, self.path, "backup", self._writer)
        self._since_save = 0
        self._last_position = self._position()
        self._has_backup = True

    def _context(self) -> TrainingContext:
        assert self.model is not None
        return self.model.training_context

    @staticmethod
    def _template(context: TrainingContext) -> dict[str, Any] | None:
        """What a sharded strategy loads the backup into (its own state's layout)."""
        if not isinstance(context.strategy, ShardedState):
            return None  # one file, read whole
        return capture_training_state(context, context.callbacks)

    def _position(self) -> tuple[int, int]:
        context = self._context()
        return context.epoch, context.step

    def state_dict(self) -> dict[str, Any]:
        return {}


def _resume_message(path: Path, state: dict[str, Any], replicas: int) -> str:
    pos = state["position"]
    msg = (f"mirrorfit: resuming from {path} at epoch {pos['epoch'] + 1}, step {pos['step']} "
           f"(saved by {state['replicas']} worker(s), now {replicas})")
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if attempt:
        msg += f", restart {attempt}/{os.environ.get('TORCHELASTIC_MAX_RESTARTS', '?')}"
    return msg


def _remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: other files live there
        directory.rmdir()
