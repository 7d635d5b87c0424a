"""Model: Keras's compile/fit/evaluate/predict around any ``torch.nn.Module``.

The model composes a strategy (where replicas live and how they talk) and a
trainer (the loops); it inherits from neither, and the wrapped module carries no
distribution code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorfit import losses as losses_mod
from mirrorfit import optimizers as optimizers_mod
from mirrorfit.callbacks.callback import Callback
from mirrorfit.callbacks.callback_list import CallbackList
from mirrorfit.callbacks.history import History
from mirrorfit.callbacks.progbar_logger import ProgbarLogger, format_logs
from mirrorfit.model_inputs import fit_streams, stream_for
from mirrorfit.strategies import consistency, context, process_group
from mirrorfit.strategies.strategy import Strategy
from mirrorfit.trainer.steps import Steps
from mirrorfit.trainer.trainer import Trainer


class Model:
    """Wrap a ``torch.nn.Module`` for Keras-style training.

    Args:
        module: the network; ``model.module`` returns it unchanged.

    Example:
        >>> import numpy as np, torch, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(4, 1))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> history = model.fit(np.zeros((8, 4), "float32"), np.zeros((8, 1), "float32"),
        ...                     epochs=2, verbose=0)
        >>> sorted(history.history)
        ['loss']
    """

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"Model wraps a torch.nn.Module; received {type(module).__name__}.")
        self.module = module
        self._strategy: Strategy | None = context.get_strategy() if context.has_strategy() else None
        self._trainer: Trainer | None = None
        self.stop_training = False
        self.history: History | None = None
        self._compile_args: dict[str, Any] | None = None  # what Model.save can record
        self._fit_callbacks: CallbackList | None = None  # what BackupAndRestore captures

    @property
    def strategy(self) -> Strategy:
        """The strategy the model is bound to (the default one-device strategy if none)."""
        return self._strategy if self._strategy is not None else context.get_strategy()

    # --- compile ------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None,
                metrics: Sequence[Any] | None = None, *, steps_per_update: int = 1) -> None:
        """Choose the optimizer, loss and metrics (Keras names or torch objects).

        Args:
            optimizer: 'adam', 'sgd', 'rmsprop', … or a ``torch.optim.Optimizer``.
            loss: 'sparse_categorical_crossentropy', 'mse', … or a callable
                ``loss(y_pred, y_true)`` returning the batch mean.
            metrics: e.g. ``["accuracy"]``.
            steps_per_update: accumulate gradients over this many batches per
                optimizer step (no all-reduce in between).

        Raises:
            ValueError: an unknown optimizer, loss or metric name.
        """
        if context.has_strategy():
            self._strategy = context.get_strategy()
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'.")
        if not isinstance(steps_per_update, int) or steps_per_update < 1:
            raise ValueError(f"steps_per_update must be an integer >= 1, received "
                             f"{steps_per_update!r}.")
        strategy = self.strategy
        loss_fn = losses_mod.get(loss)
        metric_list = list(metrics or [])
        consistency.check_compile(strategy, self.module, optimizer, loss_fn, metric_list,
                                  steps_per_update)
        wrapped = strategy.setup_module(self.module)
        opt = optimizers_mod.get(optimizer, self.module.parameters())
        steps = Steps(self.module, wrapped, opt, loss_fn, strategy.device,
                      strategy.num_replicas_in_sync)
        self._trainer = Trainer(self, steps, metric_list, steps_per_update)
        self._compile_args = {"optimizer": optimizer, "loss": loss, "metrics": metric_list,
                              "steps_per_update": steps_per_update}
        if wrapped is not self.module:
            process_group.on_teardown(self._release_wrapper)

    def _release_wrapper(self) -> None:
        if self._trainer is not None:
            self._trainer.steps.wrapped = self.module

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._compiled().steps.optimizer

    def _compiled(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError("The model is not compiled; call model.compile(optimizer, loss, "
                               "metrics) before fit(), evaluate() or predict().")
        return self._trainer

    # --- loops --------------------------------------------------------------------------
    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            sample_weight: Any = None, initial_epoch: int = 0,
            steps_per_epoch: int | None = None, validation_batch_size: int | None = None,
            validation_freq: int = 1, seed: int | None = None) -> History:
        """Train for ``epochs`` epochs; ``batch_size`` is the **global** batch.

        Returns:
            A History whose ``.history`` holds the global per-epoch values.
        """
        trainer = self._compiled()
        verbose = _verbose(verbose)
        if not isinstance(epochs, int) or epochs < 1 or initial_epoch < 0:
            raise ValueError(f"epochs must be an integer >= 1 and initial_epoch >= 0; received "
                             f"epochs={epochs!r}, initial_epoch={initial_epoch!r}.")
        trainer.seed = self.strategy.agree_seed(seed)
        stream, val = fit_streams(self.strategy, x, y, sample_weight, batch_size=batch_size,
                                  shuffle=shuffle, seed=trainer.seed,
                                  validation_split=validation_split,
                                  validation_data=validation_data,
                                  validation_batch_size=validation_batch_size)
        consistency.check_fit(self.strategy, stream, val, epochs=epochs,
                              initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                              validation_freq=validation_freq, seed=trainer.seed)
        self.history = History()
        cbs = self._callbacks(callbacks, verbose, epochs, stream, steps_per_epoch)
        self._agree_on_reporting(cbs)
        self._fit_callbacks = cbs
        self.stop_training = False
        trainer.fit(stream, epochs=epochs, initial_epoch=initial_epoch, callbacks=cbs,
                    val=(val, validation_freq) if val is not None else None,
                    verbose=cbs.params["verbose"],
                    steps_per_epoch=steps_per_epoch)
        return self.history

    def _agree_on_reporting(self, cbs: CallbackList) -> None:
        """Every rank must make the same collectives: the chief's ``verbose`` rules (only
        it prints), and batch-level logs are on if any rank's callbacks want them (they
        cost a collective per step). One gather settles both."""
        if self.strategy.num_replicas_in_sync < 2:
            return
        everyone = self.strategy.all_gather_object((cbs.params["verbose"], cbs.batch_logs))
        cbs.params["verbose"] = everyone[0][0]
        cbs.batch_logs = any(wants for _, wants in everyone)
        for cb in cbs:
            if isinstance(cb, ProgbarLogger):
                cb.verbose = everyone[0][0]

    def _callbacks(self, callbacks: Sequence[Callback] | None, verbose: int, epochs: int,
                   stream: Any, steps_per_epoch: int | None) -> CallbackList:
        extra: list[Callback] = [self.history] if self.history is not None else []
        if verbose and not any(isinstance(cb, ProgbarLogger) for cb in callbacks or []):
            extra.append(ProgbarLogger(verbose))
        params = {"epochs": epochs, "verbose": verbose,
                  "steps": steps_per_epoch or stream.steps_per_epoch(),
                  "samples": None if steps_per_epoch else stream.num_samples()}
        return CallbackList([*(callbacks or []), *extra], self, params)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: int | str = "auto", sample_weight: Any = None,
                 callbacks: Sequence[Callback] | None = None,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Loss and metrics over every sample exactly once (global values).

        Returns:
            The loss if there are no metrics, ``[loss, *metrics]`` otherwise, or a dict
            when ``return_dict=True`` (Keras's convention).
        """
        trainer = self._compiled()
        stream = stream_for(self.strategy, x, y, sample_weight, batch_size)
        consistency.check_stream(self.strategy, stream, "evaluate")
        verbose = _verbose(verbose)
        logs = trainer.evaluate(stream, CallbackList(callbacks, self, {"verbose": verbose}))
        if verbose and self.strategy.is_chief:
            steps = stream.steps_per_epoch()
            print(f"{steps}/{steps}{format_logs(logs)}")
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0,
                callbacks: Sequence[Callback] | None = None) -> np.ndarray:
        """Outputs for every sample, in input order, on every replica (numpy)."""
        trainer = self._compiled()
        stream = stream_for(self.strategy, x, None, None, batch_size)
        consistency.check_stream(self.strategy, stream, "predict")
        return trainer.predict(stream, CallbackList(callbacks, self, {}))

    # --- weights ------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Parameters and buffers as numpy arrays, in ``state_dict`` order."""
        return [t.detach().cpu().numpy().copy() for t in self.module.state_dict().values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Assign arrays in the order :meth:`get_weights` returns them.

        Raises:
            ValueError: a count or shape that does not match, naming the tensor.
        """
        state = self.module.state_dict()
        if len(weights) != len(state):
            raise ValueError(f"set_weights expected {len(state)} arrays, received {len(weights)}.")
        new = {}
        for (name, old), value in zip(state.items(), weights, strict=True):
            t = torch.as_tensor(np.asarray(value))
            if tuple(t.shape) != tuple(old.shape):
                raise ValueError(f"set_weights: {name} has shape {tuple(old.shape)}, received an "
                                 f"array of shape {tuple(t.shape)}.")
            new[name] = t.to(dtype=old.dtype)
        self.module.load_state_dict(new)

    # --- state and saving (mechanics in mirrorfit.checkpoint and mirrorfit.saving) ----------
    def state_dict(self) -> dict[str, Any]:
        """Module weights; once compiled also the optimizer state and the trainer's
        position (epoch, step, data seed, running metrics). Live tensors, not copies."""
        state: dict[str, Any] = {"module": self.module.state_dict()}
        if self._trainer is not None:
            state["optimizer"] = self._trainer.steps.optimizer.state_dict()
            state["trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; everything is checked before anything loads.

        Raises:
            MismatchedCheckpointError: keys, shapes or optimizer groups that differ.
        """
        from mirrorfit.checkpoint.state import load_model_state

        load_model_state(self, state, "the state dict")

    def save(self, filepath: str | os.PathLike[str], include_optimizer: bool = True) -> None:
        """Write weights, optimizer state and Keras-name compile arguments to ``filepath``
        (atomically, chief only; not collective). Reload with :func:`mirrorfit.load_model`."""
        from mirrorfit import saving

        saving.save_model(self, filepath, include_optimizer)

    def save_weights(self, filepath: str | os.PathLike[str]) -> None:
        """Write the module's weights to ``filepath`` (atomically, chief only)."""
        from mirrorfit import saving

        saving.save_weights(self, filepath)

    def load_weights(self, filepath: str | os.PathLike[str]) -> None:
        """Load weights (and optimizer state, if saved and compiled) from ``filepath``.

        Raises:
            CheckpointError: a corrupt, unsafe, incompatible or mismatched file.
        """
        from mirrorfit import saving

        saving.load_weights(self, filepath)


def _verbose(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2; received {verbose!r}.")
    return int(verbose)
