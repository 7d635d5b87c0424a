"""Callbacks with Keras's names, arguments and hook names; one callback per module.

Every worker runs every callback; decisions come from the global logs, so they
are the same on every replica, and only the chief writes files or prints.
"""

from __future__ import annotations

from mirrorfit.callbacks.backup_and_restore import BackupAndRestore
from mirrorfit.callbacks.callback import Callback
from mirrorfit.callbacks.callback_list import CallbackList
from mirrorfit.callbacks.csv_logger import CSVLogger
from mirrorfit.callbacks.early_stopping import EarlyStopping
from mirrorfit.callbacks.history import History
from mirrorfit.callbacks.lambda_callback import LambdaCallback
from mirrorfit.callbacks.learning_rate_scheduler import LearningRateScheduler
from mirrorfit.callbacks.learning_rate_warmup import LearningRateWarmup
from mirrorfit.callbacks.model_checkpoint import ModelCheckpoint
from mirrorfit.callbacks.progbar_logger import ProgbarLogger
from mirrorfit.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from mirrorfit.callbacks.step_timing import StepTiming
from mirrorfit.callbacks.tensorboard import TensorBoard
from mirrorfit.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["BackupAndRestore", "CSVLogger", "Callback", "CallbackList", "EarlyStopping",
           "History", "LambdaCallback", "LearningRateScheduler", "LearningRateWarmup",
           "ModelCheckpoint", "ProgbarLogger", "ReduceLROnPlateau", "StepTiming", "TensorBoard",
           "TerminateOnNaN"]
