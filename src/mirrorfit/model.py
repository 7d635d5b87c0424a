"""Model: Keras's compile/fit/evaluate/predict around any ``torch.nn.Module``.

The model composes a strategy (where replicas live and how they talk) and a
trainer (the loops); it inherits from neither, and the wrapped module carries no
distribution code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mirrorfit import keras_models, mixed_precision
from mirrorfit import losses as losses_mod
from mirrorfit import optimizers as optimizers_mod
from mirrorfit import precision as precision_mod
from mirrorfit.callbacks.callback import Callback
from mirrorfit.callbacks.callback_list import CallbackList
from mirrorfit.callbacks.history import History
from mirrorfit.callbacks.progbar_logger import ProgbarLogger, format_logs
from mirrorfit.callbacks.step_timing import StepTiming
from mirrorfit.checkpoint import model_file
from mirrorfit.model_batches import BatchMethods, keras_result
from mirrorfit.model_inputs import first_steps, fit_streams, stream_for
from mirrorfit.strategies import consistency, context
from mirrorfit.strategies.default import get_strategy
from mirrorfit.strategies.setup import Clipping, Setup
from mirrorfit.strategies.strategy import Strategy
from mirrorfit.trainer.context import TrainingContext
from mirrorfit.trainer.steps import Steps
from mirrorfit.trainer.trainer import Trainer


class Model(BatchMethods):
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
        self._strategy: Strategy | None = context.current()
        self._trainer: Trainer | None = None
        self._stop_training = False  # before compile; then the training context holds it
        self.history: History | None = None

    @property
    def strategy(self) -> Strategy:
        """The strategy the model is bound to (the default one-device strategy if none)."""
        return self._strategy if self._strategy is not None else get_strategy()

    # --- compile ------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None,
                metrics: Sequence[Any] | None = None, *,
                weighted_metrics: Sequence[Any] | None = None, steps_per_update: int = 1,
                jit_compile: bool = False, clipnorm: float | None = None,
                clipvalue: float | None = None, global_clipnorm: float | None = None) -> None:
        """Choose the optimizer, loss and metrics (Keras names or torch objects).

        The strategy in scope sets the module up (places, wraps or shards it) and points
        the optimizer at the parameters it produced; the precision policy is
        ``mirrorfit.mixed_precision.global_policy()`` unless the strategy names one.

        Args:
            optimizer: 'adam', 'sgd', 'rmsprop', … or a ``torch.optim.Optimizer``.
            loss: 'sparse_categorical_crossentropy', 'mse', … or a callable
                ``loss(y_pred, y_true)`` returning the batch mean.
            metrics: e.g. ``["accuracy"]``; as in Keras, not weighted by ``sample_weight``
                or ``class_weight``.
            weighted_metrics: metrics weighted by ``sample_weight`` and ``class_weight``
                (Keras's); one named like a plain metric is logged as ``weighted_<name>``.
            steps_per_update: accumulate gradients over this many batches per
                optimizer step (no all-reduce in between).
            jit_compile: run the module under ``torch.compile`` (Keras's name); it pays
                on GPUs, seldom on small CPU models.
            clipnorm, clipvalue, global_clipnorm: Keras's gradient clipping, on the
                global gradient (also read from the optimizer's attributes of the
                same names).

        Raises:
            ValueError: an unknown optimizer, loss, metric or policy name, or bad
                clipping values.
        """
        if context.has_strategy():
            self._strategy = context.current()
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'.")
        if not isinstance(steps_per_update, int) or steps_per_update < 1:
            raise ValueError(f"steps_per_update must be an integer >= 1, received "
                             f"{steps_per_update!r}.")
        clipping = _clipping(optimizer, clipnorm, clipvalue, global_clipnorm)
        strategy = self.strategy
        metric_list, weighted_list = list(metrics or []), list(weighted_metrics or [])
        keras_models.check_compile_arguments(optimizer, loss, metric_list + weighted_list)
        loss_fn = losses_mod.get(loss)
        policy = mixed_precision.global_policy().name
        consistency.check_compile(strategy, self.module, optimizer, loss_fn,
                                  metric_list + weighted_list, steps_per_update)
        opt = optimizers_mod.get(optimizer, self.module.parameters())
        setup = strategy.setup(self.module, opt, precision=policy, clipping=clipping,
                               jit_compile=bool(jit_compile))
        keras_models.check_batchnorm(self.module, strategy.num_replicas_in_sync)
        args = {"optimizer": optimizer, "loss": loss, "metrics": metric_list,
                "weighted_metrics": weighted_list, "steps_per_update": steps_per_update,
                "jit_compile": bool(jit_compile)}
        self._trainer = Trainer(Steps(setup, strategy, loss_fn), metric_list, steps_per_update,
                                args, weighted_metrics=weighted_list)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer the strategy set up (built on the parameters it produced)."""
        return self._compiled().steps.optimizer

    @property
    def compiled(self) -> bool:
        """True once :meth:`compile` ran (Keras's attribute)."""
        return self._trainer is not None

    @property
    def training_context(self) -> TrainingContext:
        """What callbacks and checkpoints use: strategy, setup, position, state.

        Raises:
            RuntimeError: the model is not compiled.
        """
        return self._compiled().context

    @property
    def stop_training(self) -> bool:
        """Set True (in a callback) to stop ``fit``; every replica agrees on it."""
        return self._trainer.context.stop_training if self._trainer else self._stop_training

    @stop_training.setter
    def stop_training(self, value: bool) -> None:
        self._stop_training = bool(value)
        if self._trainer is not None:
            self._trainer.context.stop_training = bool(value)

    def _compiled(self) -> Trainer:
        if self._trainer is None:
            raise RuntimeError("The model is not compiled; call model.compile(optimizer, loss, "
                               "metrics) before fit(), evaluate() or predict().")
        return self._trainer

    # --- loops --------------------------------------------------------------------------
    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = None, epochs: int = 1,
            verbose: int | str = "auto", callbacks: Sequence[Callback] | None = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            class_weight: Mapping[int, float] | None = None, sample_weight: Any = None,
            initial_epoch: int = 0,
            steps_per_epoch: int | None = None, validation_steps: int | None = None,
            validation_batch_size: int | None = None, validation_freq: int = 1,
            seed: int | None = None) -> History:
        """Train for ``epochs`` epochs; ``batch_size`` is the **global** batch.

        ``class_weight`` (Keras's): ``{class id: weight}`` for the training loss over
        arrays, applied as per-sample weights (times ``sample_weight``); see
        :mod:`mirrorfit.class_weights`.

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
                                  validation_batch_size=validation_batch_size,
                                  class_weight=class_weight)
        if steps_per_epoch is None:  # an infinite stream needs it
            first_steps(stream, None, "steps_per_epoch", "The training data")
        if val is not None:
            val = first_steps(val, validation_steps, "validation_steps", "The validation data")
        consistency.check_fit(self.strategy, stream, val, epochs=epochs,
                              initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                              validation_freq=validation_freq, seed=trainer.seed)
        self.history = History()
        verbose, batch_logs = self._agree_on_reporting(verbose, callbacks or [])
        cbs = self._callbacks(callbacks, verbose, epochs, stream, steps_per_epoch)
        cbs.batch_logs = batch_logs
        trainer.fit(stream, epochs=epochs, initial_epoch=initial_epoch, callbacks=cbs,
                    val=(val, validation_freq) if val is not None else None,
                    verbose=cbs.params["verbose"],
                    steps_per_epoch=steps_per_epoch)
        return self.history

    def _agree_on_reporting(self, verbose: int,
                            callbacks: Sequence[Callback]) -> tuple[int, bool]:
        """Every rank must make the same collectives: the chief's ``verbose`` rules (only
        it prints), and batch-level logs are on if any rank's callbacks want them (they
        cost a collective per step). One gather settles both, before the callbacks are
        built: fit's own callbacks depend on ``verbose`` only."""
        wants = any(cb.batch_logs for cb in callbacks)
        if self.strategy.num_replicas_in_sync < 2:
            return verbose, wants
        everyone = self.strategy.all_gather_object((verbose, wants))
        verbose = everyone[0][0]
        for cb in callbacks:
            if isinstance(cb, ProgbarLogger):
                cb.verbose = verbose
        return verbose, any(w for _, w in everyone)

    def _callbacks(self, callbacks: Sequence[Callback] | None, verbose: int, epochs: int,
                   stream: Any, steps_per_epoch: int | None) -> CallbackList:
        extra: list[Callback] = [self.history] if self.history is not None else []
        if verbose and not any(isinstance(cb, ProgbarLogger) for cb in callbacks or []):
            extra.append(ProgbarLogger(verbose))
        if verbose:  # the line it prints; with verbose=0 its clock reads would be waste
            extra.append(StepTiming())  # last: its batch hooks frame the step itself
        params = {"epochs": epochs, "verbose": verbose,
                  "steps": steps_per_epoch or stream.steps_per_epoch(),
                  "samples": None if steps_per_epoch else stream.num_samples()}
        return CallbackList([*(callbacks or []), *extra], self, params)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None,
                 verbose: int | str = "auto", sample_weight: Any = None,
                 steps: int | None = None, callbacks: Sequence[Callback] | None = None,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """Loss and metrics over every sample exactly once (global values); with
        ``steps``, over the first ``steps`` global batches (needed for an infinite Dataset).

        Returns:
            The loss if there are no metrics, ``[loss, *metrics]`` otherwise, or a dict
            when ``return_dict=True`` (Keras's convention).
        """
        trainer = self._compiled()
        stream = first_steps(stream_for(self.strategy, x, y, sample_weight, batch_size), steps,
                             "steps", "The data passed to evaluate()")
        consistency.check_stream(self.strategy, stream, "evaluate")
        verbose = _verbose(verbose)
        logs = trainer.evaluate(stream, CallbackList(callbacks, self, {"verbose": verbose}))
        if verbose and self.strategy.is_chief:
            steps = stream.steps_per_epoch()
            print(f"{steps}/{steps}{format_logs(logs)}")
        return keras_result(logs, return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0,
                steps: int | None = None, callbacks: Sequence[Callback] | None = None) -> Any:
        """Outputs for every sample, in input order, on every replica, as numpy: one array,
        or, for a model that returns a tuple, list or dict of outputs, the same structure
        of arrays; with ``steps``, for the first ``steps`` global batches. No ``compile``
        needed."""
        trainer = self._trainer if self._trainer is not None else self._predictor()
        stream = first_steps(stream_for(self.strategy, x, None, None, batch_size), steps,
                             "steps", "The data passed to predict()")
        consistency.check_stream(self.strategy, stream, "predict")
        return trainer.predict(stream, CallbackList(callbacks, self, {}))

    def _predictor(self) -> Trainer:
        """predict() before compile: the module placed on the strategy's device under the
        precision policy; no optimizer, no loss, no training wrapper (prediction makes no
        gradient, and ``Strategy.forward`` calls ``setup.evaluator``, the module)."""
        strategy = self.strategy
        module = self.module.to(strategy.device)
        policy = strategy.precision_policy or mixed_precision.global_policy().name
        setup = Setup(module, module, module, None,  # type: ignore[arg-type]  # never steps
                      precision_mod.resolve(policy, strategy.device))
        return Trainer(Steps(setup, strategy, None), [])  # type: ignore[arg-type]  # no loss

    def summary(self, input_shape: Any = None, sample: Any = None,
                print_fn: Callable[[str], Any] | None = None,
                dtype: torch.dtype | None = None) -> str:
        """Print Keras's table of layers, output shapes and parameters (chief only).

        Args:
            input_shape: one input's shape without the batch dimension, e.g.
                ``(784,)`` (or a list of shapes), to show output shapes.
            sample: a real input batch instead of ``input_shape``.
            print_fn: called with each line instead of ``print`` (Keras's argument).
            dtype: the input dtype for ``input_shape`` (default float32).

        Returns:
            The table as one string (on every worker).
        """
        from mirrorfit.callbacks.chief_io import chief_print
        from mirrorfit.summary import summary_lines

        lines = summary_lines(self.module, input_shape, sample, dtype)
        for line in lines:
            chief_print(self, line, print_fn)
        return "\n".join(lines)

    # --- weights ------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        """Parameters and buffers of the whole model as numpy arrays, in ``state_dict``
        order, on every rank (gathered where the strategy shards or splits them)."""
        state = self.strategy.full_state_dict(self.module)
        return [t.detach().cpu().numpy().copy() for t in state.values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Assign arrays in the order :meth:`get_weights` returns them.

        Raises:
            ValueError: a count or shape that does not match, naming the tensor.
        """
        state = self.strategy.full_state_dict(self.module)
        if len(weights) != len(state):
            raise ValueError(f"set_weights expected {len(state)} arrays, received {len(weights)}.")
        new = {}
        for (name, old), value in zip(state.items(), weights, strict=True):
            t = torch.as_tensor(np.asarray(value))
            if tuple(t.shape) != tuple(old.shape):
                raise ValueError(f"set_weights: {name} has shape {tuple(old.shape)}, received an "
                                 f"array of shape {tuple(t.shape)}.")
            new[name] = t.to(dtype=old.dtype)
        self.strategy.load_full_state_dict(self.module, new)

    # --- state and saving (mechanics in mirrorfit.checkpoint) --------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Module weights; once compiled also the optimizer state, the precision policy's
        (loss scale) and the trainer's position (epoch, step, data seed, running
        metrics). Live tensors, not copies."""
        if self._trainer is None:
            return {"module": self.module.state_dict()}
        return self._trainer.context.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; everything is checked before anything loads.

        Raises:
            MismatchedCheckpointError: keys, shapes or optimizer groups that differ.
        """
        from mirrorfit.checkpoint.state import load_model_state

        load_model_state(self.module, self._trainer.context if self._trainer else None, state,
                         "the state dict")

    def save(self, filepath: str | os.PathLike[str], include_optimizer: bool = True) -> None:
        """Write weights, optimizer state and Keras-name compile arguments to ``filepath``
        (atomically, one consolidated file written by the chief; collective when the
        strategy shards the model). Reload with :func:`mirrorfit.load_model`."""
        model_file.save_model(self.strategy, self.module, self._context(), filepath,
                              include_optimizer)

    def save_weights(self, filepath: str | os.PathLike[str]) -> None:
        """Write the module's weights to ``filepath`` (atomically, chief only)."""
        model_file.save_weights(self.strategy, self.module, filepath)

    def load_weights(self, filepath: str | os.PathLike[str]) -> None:
        """Load weights (and optimizer state, if saved and compiled) from ``filepath``.

        Raises:
            CheckpointError: a corrupt, unsafe, incompatible or mismatched file.
        """
        model_file.load_weights(self.strategy, self.module, self._context(), filepath)

    def _context(self) -> TrainingContext | None:
        return self._trainer.context if self._trainer is not None else None


def _clipping(optimizer: Any, clipnorm: float | None, clipvalue: float | None,
              global_clipnorm: float | None) -> Clipping:
    """compile's clipping arguments, else those an optimizer object carries (Keras's
    optimizers take clipnorm, clipvalue and global_clipnorm)."""
    if clipnorm is None and clipvalue is None and global_clipnorm is None:
        clipnorm = getattr(optimizer, "clipnorm", None)
        clipvalue = getattr(optimizer, "clipvalue", None)
        global_clipnorm = getattr(optimizer, "global_clipnorm", None)
    return Clipping(clipnorm, clipvalue, global_clipnorm)


def _verbose(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2; received {verbose!r}.")
    return int(verbose)
