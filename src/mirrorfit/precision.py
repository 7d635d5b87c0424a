"""Precision policies: how the forward pass, backward pass and optimizer step treat
floating-point types, as one object the strategy calls (Lightning's ``Precision``).

- :class:`FullPrecision` (``"float32"``): nothing to do;
- :class:`MixedPrecision` (``"mixed_bfloat16"``, ``"mixed_float16"``): the forward
  pass and the loss run under ``torch.autocast`` in the compute type while the
  parameters, their gradients and the optimizer state stay float32. float16 also
  scales the loss with ``torch.amp.GradScaler`` (on the CPU too): a step whose
  gradients hold inf or NaN is skipped and the scale halved. Every replica takes the
  same decision (the strategy passes an agreement for gradients it does not
  replicate), and the scaler's state is part of every checkpoint.

Keras's names are set with :func:`mirrorfit.mixed_precision.set_global_policy`;
Lightning's (``"bf16-mixed"``, ``"16-mixed"``, ``"32"``) with a strategy's
``precision=`` argument. Both end in :func:`resolve`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["POLICIES", "FullPrecision", "MixedPrecision", "Precision", "passthrough",
           "resolve"]

#: Keras's policy names -> autocast dtype (None: float32 throughout)
POLICIES: dict[str, torch.dtype | None] = {
    "float32": None, "mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}
#: Lightning's names for the same policies
ALIASES = {"32": "float32", "32-true": "float32", "bf16-mixed": "mixed_bfloat16",
           "16-mixed": "mixed_float16"}

#: agrees on a 0-dim float tensor across every rank that holds part of the gradients (MAX)
Agreement = Callable[[torch.Tensor], None]

_NOTHING = contextlib.nullcontext()  # reusable: float32's forward needs no context


class Precision:
    """The policy interface; this base is float32 throughout."""

    name = "float32"
    compute_dtype: torch.dtype | None = None

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """Around the forward pass and the loss."""
        return _NOTHING

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``.grad`` hold true gradients (before clipping them)."""

    def step(self, optimizer: torch.optim.Optimizer, agree: Agreement | None = None) -> bool:
        """Run ``optimizer.step()``; False when the step was skipped."""
        optimizer.step()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def passthrough(policy: Precision) -> bool:
    """True where ``policy`` adds nothing to torch's own calls: no context around the
    forward pass, a plain ``backward()`` and ``step()`` (the base's float32 methods)."""
    cls = type(policy)
    return (cls.forward_context is Precision.forward_context
            and cls.backward is Precision.backward and cls.step is Precision.step)


class FullPrecision(Precision):
    """float32 everywhere (the default)."""


class MixedPrecision(Precision):
    """Autocast to ``dtype`` on ``device``; float16 adds a GradScaler.

    Args:
        name: the Keras policy name, for messages and fingerprints.
        dtype: ``torch.bfloat16`` or ``torch.float16``.
        device: the replica's device.
    """

    def __init__(self, name: str, dtype: torch.dtype, device: torch.device) -> None:
        self.name = name
        self.compute_dtype = dtype
        self.device_type = device.type
        self.scaler = (torch.amp.GradScaler(device.type) if dtype == torch.float16 else None)
        self._unscaled = False

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device_type, dtype=self.compute_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None and not self._unscaled:
            self.scaler.unscale_(optimizer)
            self._unscaled = True

    def step(self, optimizer: torch.optim.Optimizer, agree: Agreement | None = None) -> bool:
        if self.scaler is None:
            optimizer.step()
            return True
        self.unscale_gradients(optimizer)  # finds inf/NaN per device
        found = _found_inf(self.scaler, optimizer)
        if agree is not None:
            for flag in found:
                agree(flag)  # every rank skips, or none does
        skipped = any(bool(flag.item()) for flag in found)
        self.scaler.step(optimizer)  # skips optimizer.step() when found inf
        self.scaler.update()
        self._unscaled = False
        return not skipped

    @property
    def scale(self) -> float:
        """The current loss scale (1.0 without a scaler)."""
        return float(self.scaler.get_scale()) if self.scaler is not None else 1.0

    def state_dict(self) -> dict[str, Any]:
        if self.scaler is None:
            return {}
        return {k: (v if not isinstance(v, torch.Tensor) else v.detach().cpu())
                for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))


def _found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer,
               ) -> list[torch.Tensor]:
    """The scaler's inf/NaN flags for ``optimizer`` after ``unscale_`` (one per device).

    GradScaler keeps them per optimizer; its ``step`` reads these very tensors, so
    reducing them in place makes every rank's ``step`` take the agreed decision.
    """
    per_optimizer = scaler._per_optimizer_states[id(optimizer)]
    return list(per_optimizer["found_inf_per_device"].values())


def canonical_name(policy: str) -> str:
    """A Keras policy name for ``policy`` (Keras's or Lightning's spelling).

    Raises:
        ValueError: an unknown name, with the accepted ones.
    """
    name = ALIASES.get(str(policy), str(policy))
    if name not in POLICIES:
        accepted = ", ".join(repr(n) for n in [*POLICIES, *ALIASES])
        raise ValueError(f"Unknown precision policy {policy!r}; expected one of {accepted}.")
    return name


def resolve(policy: str, device: torch.device) -> Precision:
    """The :class:`Precision` for ``policy`` on ``device``.

    Raises:
        ValueError: an unknown policy, or one that ``device`` cannot run (named both).
    """
    name = canonical_name(policy)
    dtype = POLICIES[name]
    if dtype is None:
        return FullPrecision()
    check_supported(name, dtype, device)
    return MixedPrecision(name, dtype, device)


def check_supported(name: str, dtype: torch.dtype, device: torch.device) -> None:
    """Raise a ValueError naming ``name`` and ``device`` when autocast cannot run there."""
    problem = None
    if not torch.amp.is_autocast_available(device.type):
        problem = f"torch has no autocast for device type {device.type!r}"
    elif device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        problem = "this GPU has no bfloat16 support"
    if problem is not None:
        raise ValueError(f"Precision policy {name!r} cannot run on {device}: {problem}. Use "
                         "'float32' there, or 'mixed_float16' on GPUs without bfloat16.")
