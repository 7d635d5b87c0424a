"""TensorBoard: Keras's event files through ``torch.utils.tensorboard``, chief only."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import torch

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import is_chief

_EXTRA = "pip install 'mirrorfit[tensorboard]'"


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch raises this when the tensorboard package is missing
        raise ImportError(f"mirrorfit.callbacks.TensorBoard needs the tensorboard package: "
                          f"{_EXTRA} (or pip install tensorboard).") from exc
    return SummaryWriter


class TensorBoard(Callback):
    """Write the logs as TensorBoard event files (Keras's layout and tag names).

    ``log_dir/train`` holds ``epoch_<key>`` scalars (step: the 0-based epoch) and,
    with ``histogram_freq``, the parameters' histograms; ``log_dir/validation``
    holds the ``val_`` keys under the same tags, so TensorBoard draws train and
    validation on one chart. With ``update_freq=N``, ``log_dir/batch`` holds
    ``batch_<key>`` scalars every N steps (step: the global step; asking for batch
    logs costs one small all-reduce per step).

    Only the chief writes. With :class:`BackupAndRestore`, a resumed run tells
    TensorBoard to discard what the interrupted run wrote after the backup
    (``purge_step``), so the curves hold each epoch once.

    Args:
        log_dir: the directory; ``tensorboard --logdir log_dir`` shows it.
        histogram_freq: every this many epochs, histograms of the weights (0: none).
        write_graph: write the module's graph, traced on the first batch (in eval
            mode, without gradients, the RNG untouched).
        update_freq: 'epoch', or a number of steps between batch-level scalars.

    Raises:
        ImportError: the tensorboard package is missing (the message names the
            ``mirrorfit[tensorboard]`` extra).
        ValueError: a bad ``update_freq`` or ``histogram_freq``.

    Example:
        >>> import numpy as np, torch, tempfile, os, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> tb = mirrorfit.callbacks.TensorBoard(tempfile.mkdtemp())
        >>> _ = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=2,
        ...               verbose=0, callbacks=[tb])
        >>> sorted(os.listdir(tb.log_dir))
        ['train']
    """

    def __init__(self, log_dir: str | os.PathLike[str] = "logs", histogram_freq: int = 0,
                 write_graph: bool = False, update_freq: str | int = "epoch") -> None:
        super().__init__()
        if update_freq != "epoch" and (isinstance(update_freq, bool)
                                       or not isinstance(update_freq, int) or update_freq < 1):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch' or a positive number of "
                             f"steps; received {update_freq!r}.")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) \
                or histogram_freq < 0:
            raise ValueError(f"TensorBoard: histogram_freq must be an integer >= 0; received "
                             f"{histogram_freq!r}.")
        self._writer_class = _summary_writer()  # fail at construction, on every worker
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq, self.write_graph = histogram_freq, write_graph
        self.update_freq = update_freq
        self.batch_logs = update_freq != "epoch"
        self._writers: dict[str, Any] = {}
        # the global step is counted from the batch index fit passes (its position), so
        # it stays right wherever BackupAndRestore sits in the callback list
        self._epoch = -1  # the epoch whose start was handled
        self._epoch_start = 0  # global steps before it
        self._steps = 0  # global steps done
        self._purge: dict[str, int] = {}  # per run: drop events from this step on (resume)
        self._resuming = False
        self._restored = False
        self._graph_hook: Any = None

    # --- hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not self._restored:
            self._epoch, self._epoch_start, self._steps = -1, 0, 0
            self._purge, self._resuming = {}, False
        if self.write_graph and is_chief(self.model):
            assert self.model is not None
            module = self.model.training_context.module
            self._graph_hook = module.register_forward_pre_hook(self._graph)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self._resuming:  # what the interrupted run wrote from this epoch on is dropped
            self._purge.update(train=epoch, validation=epoch)
        if epoch != self._epoch:  # not when resumed in the middle of this epoch
            self._epoch, self._epoch_start = epoch, self._steps

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self._steps = step = self._epoch_start + batch + 1
        if self._resuming:
            self._purge["batch"] = step
            self._resuming = False
        if self.update_freq == "epoch" or step % int(self.update_freq):
            return
        if is_chief(self.model):
            self._scalars("batch", "batch_", logs or {}, step)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if not is_chief(self.model):
            return
        logs = logs or {}
        self._scalars("train", "epoch_", {k: v for k, v in logs.items()
                                          if not k.startswith("val_")}, epoch)
        val = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        if val:
            self._scalars("validation", "epoch_", val, epoch)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            assert self.model is not None
            writer = self._writer("train")
            for name, p in self.model.training_context.module.named_parameters():
                writer.add_histogram(name, p.detach().cpu(), epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._remove_graph_hook()
        for w in self._writers.values():
            w.close()
        self._writers = {}
        self._restored = False

    # --- writing ------------------------------------------------------------------------
    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            purge = self._purge.get(run)
            self._writers[run] = self._writer_class(os.path.join(self.log_dir, run),
                                                    purge_step=purge)
        return self._writers[run]

    def _scalars(self, run: str, prefix: str, logs: Logs, step: int) -> None:
        writer = self._writer(run)
        for key, value in logs.items():
            writer.add_scalar(prefix + key, value, step)

    def _graph(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        """The first forward's inputs: trace the module on them once (chief only)."""
        self._remove_graph_hook()
        modes = [(m, m.training) for m in module.modules()]
        try:
            module.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # add_graph uses jit.trace
                self._writer("train").add_graph(module, args)
        except Exception as exc:  # tracing fails on some modules: say so, keep training
            warnings.warn(f"TensorBoard: could not trace the graph ({exc}); set "
                          "write_graph=False to silence this.", stacklevel=2)
        finally:
            for m, was in modes:
                m.training = was

    def _remove_graph_hook(self) -> None:
        if self._graph_hook is not None:
            self._graph_hook.remove()
            self._graph_hook = None

    # --- state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "epoch_start": self._epoch_start, "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epoch, self._epoch_start = int(state["epoch"]), int(state["epoch_start"])
        self._steps = int(state["steps"])
        self._purge, self._resuming = {}, True  # purge points are set where training resumes
        with contextlib.suppress(Exception):
            for w in self._writers.values():
                w.close()
        self._writers = {}
        self._restored = True
