"""The training, evaluation and prediction loops (``trainer.trainer``), one step
(``trainer.steps``), global metrics (``trainer.tracker``) and the training context
callbacks and checkpoints see (``trainer.context``). Nothing is imported here, so
that ``trainer.context`` can be imported without the loops."""
