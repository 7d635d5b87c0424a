"""The training, evaluation and prediction loops."""

from __future__ import annotations

from mirrorfit.trainer.trainer import Trainer

__all__ = ["Trainer"]
