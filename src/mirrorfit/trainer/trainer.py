"""The loops: fit, evaluate, predict. A batch's way reads as a straight line:

    BatchStream (this replica's share) -> Steps.train (the strategy's train function:
    forward and backward, the loss scaled to the global mean, gradients synchronized;
    on an update the optimizer step, clipped) -> Tracker -> callbacks

The trainer owns the position (epoch, step within the epoch) and the data seed,
so ``state_dict`` captures exactly where training stands.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from mirrorfit.callbacks.callback_list import CallbackList
from mirrorfit.cluster import preemption
from mirrorfit.data.batches import BatchStream, LocalBatch
from mirrorfit.data.sharding import share_bounds
from mirrorfit.data.trees import tree_map
from mirrorfit.strategies.sync_batchnorm import weightless_share
from mirrorfit.trainer.context import TrainingContext
from mirrorfit.trainer.nonfinite import NonFiniteLossWatch
from mirrorfit.trainer.output_checks import check_first_outputs, needs_output_check
from mirrorfit.trainer.steps import Steps
from mirrorfit.trainer.tracker import Tracker

#: progress updates per epoch that need a global reduction (verbose=1)
_PROGRESS_SYNCS = 20
_HALF = (torch.float16, torch.bfloat16)


class Trainer:
    """Runs the loops for one compiled :class:`mirrorfit.Model`.

    Args:
        steps: one step on this replica's share (holds the strategy's setup).
        metrics: the compiled metrics (not weighted by sample weights).
        steps_per_update: batches per optimizer update.
        compile_args: what ``compile`` received (kept in the training context).
        weighted_metrics: the compiled metrics weighted by sample weights.
    """

    def __init__(self, steps: Steps, metrics: list[Any], steps_per_update: int = 1,
                 compile_args: dict[str, Any] | None = None,
                 weighted_metrics: list[Any] | None = None) -> None:
        self.strategy = steps.strategy
        self.steps = steps
        self.setup = steps.setup
        self.train_tracker = Tracker(metrics, self.strategy, weighted=weighted_metrics)
        self.eval_tracker = Tracker(metrics, self.strategy, weighted=weighted_metrics)
        self.steps_per_update = steps_per_update
        self.epoch = 0
        self.step = 0
        self.seed = 0
        self.stream: BatchStream | None = None
        self._resumed_tracker = False
        self.context = TrainingContext(self.strategy, steps.setup, self, compile_args or {})
        # logits given to a probability loss: checked on fit's first outputs, chief only
        self._check_outputs = self.strategy.is_chief and needs_output_check(steps.loss_fn)
        # a NaN/inf loss without TerminateOnNaN: one warning on the chief, no cost per step
        self._nonfinite = NonFiniteLossWatch(self.strategy.is_chief)
        # steps between agreements on a preemption stop (cluster.preemption); set by fit
        self._preempt_every = preemption.DEFAULT_CHECK_STEPS * steps_per_update

    # --- fit ----------------------------------------------------------------------------
    def fit(self, stream: BatchStream, *, epochs: int, initial_epoch: int,
            callbacks: CallbackList, val: tuple[BatchStream, int] | None,
            verbose: int, steps_per_epoch: int | None) -> None:
        self.context.callbacks = list(callbacks)
        self.context.stop_training = False
        self._nonfinite.start_fit(self.context.callbacks)
        with training_mode(self.steps.module, True), preemption.watch():
            self._fit(stream, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                      val=val, verbose=verbose, steps_per_epoch=steps_per_epoch)

    def _fit(self, stream: BatchStream, *, epochs: int, initial_epoch: int,
             callbacks: CallbackList, val: tuple[BatchStream, int] | None,
             verbose: int, steps_per_epoch: int | None) -> None:
        self.stream = stream
        self.epoch, self.step = initial_epoch, 0
        self._resumed_tracker = False
        self._preempt_every = preemption.check_interval(self.strategy) * self.steps_per_update
        callbacks.on_train_begin()  # a BackupAndRestore may load_state_dict() here
        logs: dict[str, float] = {}
        while self.epoch < epochs:
            callbacks.on_epoch_begin(self.epoch)
            logs = self._train_epoch(stream, callbacks, verbose, steps_per_epoch)
            if val is not None and (self.epoch + 1) % val[1] == 0:
                val_logs = self.evaluate(val[0], callbacks)
                logs.update({f"val_{k}": v for k, v in val_logs.items()})
            epoch, self.epoch, self.step = self.epoch, self.epoch + 1, 0
            callbacks.on_epoch_end(epoch, logs)
            if self._agree_stop():
                break
            if self.epoch < epochs and preemption.agreed(self.strategy):
                preemption.preempt(self.context, callbacks)  # raises Preempted
        callbacks.on_train_end(logs)

    def _train_epoch(self, stream: BatchStream, callbacks: CallbackList, verbose: int,
                     steps_per_epoch: int | None) -> dict[str, float]:
        if not self._resumed_tracker:
            self.train_tracker.reset()
        self._resumed_tracker = False
        total = steps_per_epoch or stream.steps_per_epoch() or 0
        sync_every = max(1, total // _PROGRESS_SYNCS) if verbose == 1 else 0
        batches = self._epoch_batches(stream, steps_per_epoch)
        tracker = self.train_tracker
        self._nonfinite.start_epoch(self.step)
        train = self.steps.train  # forward, backward and, on an update, the optimizer step
        batch_logs = callbacks.batch_logs
        for batch, denominator, update in self._schedule(batches):
            callbacks.on_train_batch_begin(self.step)
            if batch.size:
                loss, y_pred, y, sw = train(batch, denominator, update)
                if loss is not None:  # None: a rank without the output (pipeline)
                    if self._check_outputs:  # once per compile (output_checks)
                        self._check_outputs = check_first_outputs(self.steps.loss_fn, y_pred)
                    tracker.update(loss, y_pred, y, batch.size, sw)
            else:
                self._train_empty(batch, denominator, update)
            step = self.step = self.step + 1
            if batch_logs or (sync_every and (step % sync_every == 0 or step == total)):
                logs = tracker.result()  # a float the logs needed anyway: no extra sync
                self._nonfinite.check(logs, self.epoch, step - 1)
            else:
                logs = {}
            callbacks.on_train_batch_end(step - 1, logs)
            if not update:
                continue
            if batch_logs and self._agree_stop():  # every rank leaves at this step
                break
            # every K updates all workers agree on a preemption signal (one scalar reduce)
            if step % self._preempt_every == 0 and preemption.agreed(self.strategy):
                preemption.preempt(self.context, callbacks)  # raises Preempted
        logs = tracker.result()
        self._nonfinite.check(logs, self.epoch, self.step - 1)
        return logs

    def _epoch_batches(self, stream: BatchStream,
                       steps_per_epoch: int | None) -> Iterator[LocalBatch]:
        """This epoch's batches from ``self.step``. With ``steps_per_epoch``, epochs walk
        through the data as Keras's do (epoch e takes the next slice of a data pass),
        still a pure function of (seed, epoch, step)."""
        per_pass = stream.steps_per_epoch() if steps_per_epoch else None
        if not steps_per_epoch or not per_pass:
            batches = stream.iter_epoch(self.epoch, self.step)
            if steps_per_epoch:
                batches = itertools.islice(batches, max(0, steps_per_epoch - self.step))
            return batches
        slots = -(-per_pass // steps_per_epoch)
        data_epoch, slot = divmod(self.epoch, slots)
        first = slot * steps_per_epoch
        stop = min(first + steps_per_epoch, per_pass)
        return itertools.islice(stream.iter_epoch(data_epoch, first + self.step),
                                max(0, stop - first - self.step))

    def _train_empty(self, batch: LocalBatch, denominator: int | None, update: bool) -> None:
        """An empty share's step: its dummy sample weighs 0 and adds no BatchNorm
        statistics (the trainer's loop calls ``Steps.train`` itself otherwise). The
        update, if any, runs inside too; it runs no forward pass."""
        with weightless_share(self.steps.module):
            self.steps.train(batch, denominator, update)

    def _schedule(self, batches: Iterator[LocalBatch],
                  ) -> Iterator[tuple[LocalBatch, int | None, bool]]:
        """``(batch, denominator, update)``: batches in groups of ``steps_per_update``,
        the optimizer stepping after each group's last; the loss is a mean over the
        group's samples (``None``: the batch's own global batch)."""
        k = self.steps_per_update
        if k == 1:  # in C, no generator frame per step
            return zip(batches, itertools.repeat(None), itertools.repeat(True))
        return self._groups(batches, k)

    @staticmethod
    def _groups(batches: Iterator[LocalBatch],
                k: int) -> Iterator[tuple[LocalBatch, int | None, bool]]:
        while group := list(itertools.islice(batches, k)):
            denominator = sum(b.global_size for b in group)
            for i, batch in enumerate(group):
                yield batch, denominator, i == len(group) - 1

    def _agree_stop(self) -> bool:
        """Every replica stops if any callback on any replica asked to."""
        flag = self.strategy.reduce(float(bool(self.context.stop_training)), "max")
        self.context.stop_training = bool(flag)
        return self.context.stop_training

    # --- evaluate / predict ----------------------------------------------------------------
    def evaluate(self, stream: BatchStream, callbacks: CallbackList,
                 prefix: str = "") -> dict[str, float]:
        """Every sample once, whatever the replica count; global sums -> exact values."""
        with training_mode(self.steps.module, False):
            return self._evaluate(stream, callbacks, prefix)

    def _evaluate(self, stream: BatchStream, callbacks: CallbackList,
                  prefix: str = "") -> dict[str, float]:
        tracker = self.eval_tracker
        tracker.reset()
        tracker.prefix = prefix
        callbacks.on_test_begin()
        for i, batch in enumerate(stream.iter_epoch(0)):
            callbacks.on_test_batch_begin(i)
            loss, y_pred, y, sw = self.steps.evaluate(batch)
            if batch.size and loss is not None:  # None: a rank without the output (pipeline)
                tracker.update(loss, y_pred, y, batch.size, sw)
            callbacks.on_test_batch_end(i, {})
        logs = tracker.result()
        callbacks.on_test_end(logs)
        return logs

    def predict(self, stream: BatchStream, callbacks: CallbackList) -> Any:
        """Outputs in input order, each sample once, on every replica: one numpy array, or
        the model's tuple, list or dict of outputs with an array for each."""
        with training_mode(self.steps.module, False):
            return self._predict(stream, callbacks)

    def _predict(self, stream: BatchStream, callbacks: CallbackList) -> Any:
        outputs, positions, offset = [], [], 0
        callbacks.on_predict_begin()
        for i, batch in enumerate(stream.iter_epoch(0)):
            callbacks.on_predict_batch_begin(i)
            # the share's rows (an empty share keeps shape and dtype), on the host
            outputs.append(tree_map(functools.partial(_on_host, rows=batch.size),
                                    self.steps.predict(batch)))
            start, _ = share_bounds(batch.global_size, self.strategy.replica)
            positions.append(torch.arange(offset + start, offset + start + batch.size))
            offset += batch.global_size
            callbacks.on_predict_batch_end(i, {})
        callbacks.on_predict_end()
        if not outputs:
            return np.empty((0,), dtype=np.float32)
        # sort by position in the epoch's sample sequence: input (iteration) order
        order = torch.argsort(self.strategy.gather(torch.cat(positions)))
        return _join(outputs, lambda parts: self.strategy.gather(torch.cat(parts))[order].numpy())

    # --- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "tracker": self.train_tracker.state_dict(),
                "stream": self.stream.state_dict() if self.stream is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step, self.seed = int(state["epoch"]), int(state["step"]), state["seed"]
        self.train_tracker.load_state_dict(state["tracker"])
        if self.stream is not None and state.get("stream") is not None:
            self.stream.load_state_dict(state["stream"])
        self._resumed_tracker = True


def _on_host(output: torch.Tensor, rows: int) -> torch.Tensor:
    """A prediction's first ``rows`` on the CPU, in float32 where mixed precision computed
    it in 16 bits (numpy has no bfloat16)."""
    output = output[:rows].detach().cpu()
    return output.float() if output.dtype in _HALF else output


def _join(batches: list[Any], join: Callable[[list[torch.Tensor]], Any]) -> Any:
    """``join`` applied to each output's batches, in the model's structure (a tensor, or
    a tuple, list or dict of outputs); every rank joins its leaves in the same order."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return join(batches)
    if isinstance(first, Mapping):
        return {k: _join([b[k] for b in batches], join) for k in first}
    joined = [_join(list(column), join) for column in zip(*batches, strict=True)]
    return joined if isinstance(first, list) else tuple(joined)


@contextlib.contextmanager
def training_mode(module: torch.nn.Module, training: bool) -> Iterator[None]:
    """``module`` in eval mode (evaluate, predict) or training mode (fit), restoring every
    submodule's mode afterwards. fit leaves a module already in training mode as it is,
    so a layer the user put in eval mode (e.g. a frozen BatchNorm) stays there."""
    modes = [(m, m.training) for m in module.modules()]
    if not (training and module.training):
        module.train(training)
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was
