"""Training curves: loss and each metric per epoch, train against validation.

Used by ``History.plot(path)`` and by ``mirrorfit plot LOG.csv -o history.png``
(a :class:`~mirrorfit.callbacks.CSVLogger` file). Needs matplotlib, an optional
extra: ``pip install 'mirrorfit[plot]'``. Figures are drawn with matplotlib's
Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_history", "read_csv_log"]

_EXTRA = "pip install 'mirrorfit[plot]'"


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plotting training curves needs matplotlib: {_EXTRA} (or pip "
                          "install matplotlib).") from exc
    return Figure, FigureCanvasAgg


def panels(history: Mapping[str, Sequence[float]]) -> list[str]:
    """The metric names to draw, one panel each: ``loss`` first, ``val_`` folded in."""
    names = {k[4:] if k.startswith("val_") else k for k in history}
    return sorted(names, key=lambda n: (n != "loss", n == "learning_rate", n))


def plot_history(history: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                 epochs: Sequence[int] | None = None, title: str | None = None) -> Path:
    """Draw one panel per metric (train and validation) and save it to ``path``.

    Args:
        history: ``History.history``: each key's per-epoch values (NaN: no value).
        path: the image file; its format follows the suffix (``.png``, ``.svg``, ``.pdf``).
        epochs: the 0-based epoch of each value (default 0, 1, ...); shown 1-based.
        title: a title above the panels.

    Returns:
        ``path`` as a Path.

    Raises:
        ImportError: matplotlib is missing (the message names the ``mirrorfit[plot]`` extra).
        ValueError: an empty history.
    """
    names = panels(history)
    if not names or not any(len(v) for v in history.values()):
        raise ValueError("nothing to plot: the history has no values (train with fit() first, "
                         "or check the CSV log).")
    figure_cls, canvas_cls = _matplotlib()
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = figure_cls(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    canvas_cls(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for key, label, style in ((name, "train", "-o"), (f"val_{name}", "validation", "--s")):
            if key in history and (name != "learning_rate" or key == name):
                xs, ys = _points(history[key], epochs)
                if xs:
                    ax.plot(xs, ys, style, label=label, markersize=3)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.grid(alpha=0.3)
        if name == "learning_rate":
            ax.set_yscale("log")
        if f"val_{name}" in history:
            ax.legend()
    if title:
        fig.suptitle(title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    return target


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _points(values: Sequence[float], epochs: Sequence[int] | None) -> tuple[list[int], list[float]]:
    xs = list(epochs) if epochs is not None else list(range(len(values)))
    pairs = [(e + 1, float(v)) for e, v in zip(xs, values, strict=False)
             if v is not None and not math.isnan(float(v))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def read_csv_log(path: str | os.PathLike[str],
                 separator: str = ",") -> tuple[list[int], dict[str, list[float]]]:
    """Read a CSVLogger file: the epochs and each column's values (``NA``: NaN).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file without an ``epoch`` column or with a bad value, named.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=separator))
    if not rows or not rows[0] or rows[0][0] != "epoch":
        raise ValueError(f"{os.fspath(path)!r} is not a CSVLogger log: its first line should "
                         f"start with 'epoch'{separator}...; check the file or --separator.")
    keys = rows[0][1:]
    epochs: list[int] = []
    history: dict[str, list[float]] = {k: [] for k in keys}
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            epochs.append(int(row[0]))
            for k, v in zip(keys, row[1:], strict=True):
                history[k].append(math.nan if v in ("NA", "") else float(v))
        except ValueError as exc:
            raise ValueError(f"{os.fspath(path)!r}, line {n}: {exc}; expected numbers or NA "
                             f"in {len(keys) + 1} columns.") from None
    return epochs, {k: v for k, v in history.items() if any(not math.isnan(x) for x in v)}
