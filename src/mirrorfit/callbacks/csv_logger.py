"""CSVLogger: Keras's per-epoch CSV log, written by the chief only, resumable."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from mirrorfit.callbacks.callback import Callback, Logs
from mirrorfit.callbacks.chief_io import ChiefTextFile, is_chief


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` 0-based, then the logs' keys sorted).

    As in Keras, the columns are fixed by the first row; when the first epoch has
    no ``val_`` keys, ``val_`` columns are added for every key (``NA`` until
    validation runs). Values are the global ones (identical on every replica);
    only the chief writes, and flushes after each row.

    With :class:`BackupAndRestore`, the file's length at the backup is part of
    the callback's state: a resumed run cuts off any row written after the
    backup and writes it again, so the file ends as an uninterrupted run's would.

    Args:
        filename: the CSV file; its directory is created when needed.
        separator: the field separator.
        append: append to an existing file (no second header) instead of
            overwriting it.

    Raises:
        ValueError: a separator that is not one character.

    Example:
        >>> import numpy as np, torch, tempfile, os, mirrorfit
        >>> model = mirrorfit.Model(torch.nn.Linear(2, 1)); model.compile("sgd", "mse")
        >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> _ = model.fit(np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), epochs=2,
        ...               verbose=0, callbacks=[mirrorfit.callbacks.CSVLogger(path)])
        >>> open(path).read().splitlines()[0]
        'epoch,loss,val_loss'
    """

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"CSVLogger: separator must be one character; received "
                             f"{separator!r}.")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self.rows = 0
        self._file = ChiefTextFile(self.filename)
        self._opened = False
        self._header = True
        self._resume_at: int | None = None  # set by load_state_dict
        self._restored = False

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if not self._restored:
            self.keys, self.rows, self._resume_at = None, 0, None
        self._opened = False

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        # opened here, not in on_train_begin: a BackupAndRestore listed after this
        # callback restores its state in its own on_train_begin
        if not self._opened:
            self._open()

    def _open(self) -> None:
        chief = is_chief(self.model)
        if self._resume_at is not None:  # the header went out with the first row
            self._file.open(chief, append=True, truncate_at=self._resume_at)
            self._header = self.keys is None
        else:
            existing = self.append and chief and self._file.size() > 0
            if existing:
                self.keys = self.keys or _header(self._file.path, self.sep)
            self._file.open(chief, append=self.append)
            self._header = not existing
        self._opened, self._resume_at = True, None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if not self._opened:
            self._open()
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]  # Keras's habit
        row = [epoch, *(_value(logs.get(k, "NA")) for k in self.keys)]
        head = [["epoch", *self.keys]] if self._header else []
        self._file.write(_csv_lines(head, row, self.sep))
        self._header = False
        self.rows += 1

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._file.close()
        self._opened = self._restored = False

    def state_dict(self) -> dict[str, Any]:
        return {"keys": None if self.keys is None else list(self.keys), "rows": self.rows,
                "offset": self._file.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = None if state["keys"] is None else list(state["keys"])
        self.rows = int(state["rows"])
        self._resume_at = None if state["offset"] is None else int(state["offset"])
        self._restored = True
        if self._opened:  # restored after this fit opened the file: reopen at the mark
            self._file.close()
            self._opened = False


def _csv_lines(head: list[list[Any]], row: list[Any], sep: str) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    writer.writerows([*head, row])
    return buf.getvalue()


def _value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return f"[{', '.join(str(x) for x in v)}]"
    return v


def _header(path: Any, sep: str) -> list[str] | None:
    """The columns of an existing log (appending keeps them), or None."""
    with open(path, newline="") as f:
        first = next(csv.reader(f, delimiter=sep), None)
    return list(first[1:]) if first and first[0] == "epoch" else None
