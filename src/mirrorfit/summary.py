"""``model.summary()``: Keras's table of layers for a ``torch.nn.Module``.

Rows are the modules that hold parameters of their own or have no children
(the layers), named by their path in the module (``body.0``) and their type.
Output shapes appear when an input is known: ``input_shape`` (without the batch
dimension, Keras-style; shown as ``None``) or a ``sample`` batch. They are found
with forward hooks during one forward pass on meta tensors (no memory, no
compute); a module that cannot run on the meta device runs once on zeros
instead (eval mode, no gradients, the RNG untouched, weights unchanged).

    >>> import torch
    >>> from mirrorfit.summary import summary_lines
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> print("\\n".join(summary_lines(net, input_shape=(4,))))
    Model: "Sequential"
    ____________________________________________
     Layer (type)    Output Shape    Param #
    ============================================
     0 (Linear)      (None, 8)            40
     1 (ReLU)        (None, 8)             0
     2 (Linear)      (None, 2)            18
    ============================================
    Total params: 58 (232.00 B)
    Trainable params: 58 (232.00 B)
    Non-trainable params: 0 (0.00 B)
    ____________________________________________
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["count_params", "output_shapes", "readable_size", "summary_lines"]

Shape = Sequence[int]


def summary_lines(module: nn.Module, input_shape: Shape | Sequence[Shape] | None = None,
                  sample: Any = None, dtype: torch.dtype | None = None,
                  name: str | None = None) -> list[str]:
    """The summary table of ``module``, line by line.

    Args:
        module: the network.
        input_shape: one input's shape without the batch dimension, e.g. ``(784,)``,
            or a list of shapes for several inputs.
        sample: a real input batch (a tensor, or a tuple of tensors) instead.
        dtype: the input's dtype with ``input_shape`` (default float32; use
            ``torch.long`` for embeddings).
        name: the model's name in the title (default: the module's class).

    Raises:
        ValueError: both ``input_shape`` and ``sample``, or a bad shape.
        RuntimeError: the forward pass failed on that input (the message says which).
    """
    if input_shape is not None and sample is not None:
        raise ValueError("summary() takes input_shape or sample, not both.")
    shapes = None
    if input_shape is not None:
        shapes = output_shapes(module, _zeros_like_shapes(input_shape, dtype), batch=1)
    elif sample is not None:
        shapes = output_shapes(module, sample if isinstance(sample, tuple) else (sample,))
    rows = [(f"{path or '(root)'} ({type(m).__name__})",
             shapes.get(path, "?") if shapes is not None else None,
             sum(p.numel() for p in m.parameters(recurse=False)))
            for path, m in _layers(module)]
    return _table(name or type(module).__name__, rows, module)


def count_params(module: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameters and buffers, as counts and bytes (shared ones once)."""
    out = dict.fromkeys(("trainable", "trainable_bytes", "frozen", "frozen_bytes",
                         "buffers", "buffers_bytes"), 0)
    for p in module.parameters():  # parameters() yields a shared tensor once
        kind = "trainable" if p.requires_grad else "frozen"
        out[kind] += p.numel()
        out[f"{kind}_bytes"] += p.numel() * p.element_size()
    for b in module.buffers():
        out["buffers"] += b.numel()
        out["buffers_bytes"] += b.numel() * b.element_size()
    return out


def readable_size(nbytes: float) -> str:
    """Keras's memory sizes: ``795.04 KB`` (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1024:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def output_shapes(module: nn.Module, inputs: tuple[Any, ...],
                  batch: int | None = None) -> dict[str, str]:
    """Each layer's output shape (as text) for one forward pass on ``inputs``.

    With ``batch``, a leading dimension of that size is shown as ``None``.

    Raises:
        RuntimeError: the forward pass failed on the meta device and on zeros.
    """
    try:
        return _record(module, _to_meta(inputs), batch, meta=True)
    except Exception:  # an op without a meta kernel, a tensor attribute on another device
        pass
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    real = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in _to_zeros(inputs))
    try:
        return _record(module, real, batch, meta=False)
    except Exception as exc:
        raise RuntimeError(f"summary(): the module's forward pass failed on inputs of shape "
                           f"{[tuple(t.shape) for t in real if isinstance(t, torch.Tensor)]} "
                           f"({type(exc).__name__}: {exc}); check input_shape (without the "
                           "batch dimension) or pass sample=a real batch.") from exc


def _record(module: nn.Module, inputs: tuple[Any, ...], batch: int | None,
            meta: bool) -> dict[str, str]:
    shapes: dict[str, str] = {}
    handles = []
    for path, m in module.named_modules():
        def hook(_m: nn.Module, _args: Any, out: Any, path: str = path) -> None:
            shapes.setdefault(path, _shape_text(out, batch))
        handles.append(m.register_forward_hook(hook))
    try:
        with _quiet_forward(module):
            if meta:
                state = {k: torch.empty_like(v, device="meta")
                         for k, v in {**dict(module.named_parameters()),
                                      **dict(module.named_buffers())}.items()}
                torch.func.functional_call(module, state, inputs)
            else:
                module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return shapes


@contextlib.contextmanager
def _quiet_forward(module: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, RNG untouched; every submodule's mode restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            yield
    finally:
        for m, was in modes:
            m.training = was


def _layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    rows = [(path, m) for path, m in module.named_modules()
            if path and (not any(True for _ in m.children())
                         or any(True for _ in m.parameters(recurse=False)))]
    if any(True for _ in module.parameters(recurse=False)) or not rows:
        rows.insert(0, ("", module))
    return rows


def _zeros_like_shapes(input_shape: Shape | Sequence[Shape],
                       dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    many = len(input_shape) > 0 and all(isinstance(s, (tuple, list)) for s in input_shape)
    shapes: list[Any] = list(input_shape) if many else [input_shape]
    out = []
    for s in shapes:
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s):
            raise ValueError(f"summary(): input_shape must be a tuple of sizes without the batch "
                             f"dimension, e.g. (784,) or (1, 28, 28); received {input_shape!r}.")
        out.append(torch.zeros((1, *s), dtype=dtype or torch.float32, device="meta"))
    return tuple(out)


def _to_meta(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t
                 for t in inputs)


def _to_zeros(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(torch.zeros(t.shape, dtype=t.dtype) if isinstance(t, torch.Tensor) else t
                 for t in inputs)


def _shape_text(out: Any, batch: int | None) -> str:
    if isinstance(out, torch.Tensor):
        dims = [str(d) for d in out.shape]
        if batch is not None and dims and out.shape[0] == batch:
            dims[0] = "None"
        return "(" + ", ".join(dims) + ")"
    if isinstance(out, (tuple, list)):
        return "[" + ", ".join(_shape_text(o, batch) for o in out) + "]"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {_shape_text(v, batch)}" for k, v in out.items()) + "}"
    return type(out).__name__


def _table(title: str, rows: list[tuple[str, str | None, int]], module: nn.Module) -> list[str]:
    with_shapes = any(shape is not None for _, shape, _ in rows)
    head = ("Layer (type)", "Output Shape", "Param #") if with_shapes else ("Layer (type)",
                                                                            "Param #")
    body = [(n, s or "", f"{p:,}") if with_shapes else (n, f"{p:,}") for n, s, p in rows]
    widths = [max(len(r[i]) for r in [head, *body]) + 4 for i in range(len(head))]
    width = sum(widths) + 1

    def line(cells: Sequence[str]) -> str:
        text = " " + "".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False))
        return (text + cells[-1].rjust(widths[-1] - 4)).rstrip()

    c = count_params(module)
    total, total_b = c["trainable"] + c["frozen"], c["trainable_bytes"] + c["frozen_bytes"]
    lines = [f'Model: "{title}"', "_" * width, line(head), "=" * width,
             *(line(r) for r in body), "=" * width,
             f"Total params: {total:,} ({readable_size(total_b)})",
             f"Trainable params: {c['trainable']:,} ({readable_size(c['trainable_bytes'])})",
             f"Non-trainable params: {c['frozen']:,} ({readable_size(c['frozen_bytes'])})"]
    if c["buffers"]:
        lines.append(f"Buffers (e.g. BatchNorm statistics): {c['buffers']:,} "
                     f"({readable_size(c['buffers_bytes'])})")
    return [*lines, "_" * width]
