"""Callbacks with Keras's hook names; one callback per module."""

from __future__ import annotations

from mirrorfit.callbacks.backup_and_restore import BackupAndRestore
from mirrorfit.callbacks.callback import Callback
from mirrorfit.callbacks.callback_list import CallbackList
from mirrorfit.callbacks.history import History
from mirrorfit.callbacks.model_checkpoint import ModelCheckpoint
from mirrorfit.callbacks.progbar_logger import ProgbarLogger
from mirrorfit.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["BackupAndRestore", "Callback", "CallbackList", "History", "ModelCheckpoint",
           "ProgbarLogger", "TerminateOnNaN"]
