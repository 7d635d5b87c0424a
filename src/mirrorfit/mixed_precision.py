"""Keras's mixed-precision API: ``mirrorfit.mixed_precision.set_global_policy(name)``.

The global policy is read when a model is compiled (as in Keras, set it before
``compile``): ``"mixed_bfloat16"`` (autocast to bfloat16, no loss scaling),
``"mixed_float16"`` (autocast to float16 with a loss scaler) or ``"float32"``.
Parameters and optimizer state stay float32 under every policy.

Example:
    >>> from mirrorfit import mixed_precision
    >>> mixed_precision.set_global_policy("mixed_bfloat16")
    >>> mixed_precision.global_policy().compute_dtype
    'bfloat16'
    >>> mixed_precision.set_global_policy("float32")
"""

from __future__ import annotations

from dataclasses import dataclass

from mirrorfit.precision import POLICIES, canonical_name

__all__ = ["Policy", "global_policy", "set_global_policy"]


@dataclass(frozen=True)
class Policy:
    """A named policy; ``compute_dtype`` and ``variable_dtype`` as Keras spells them.

    Args:
        name: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (Lightning's
            ``"32"``, ``"bf16-mixed"``, ``"16-mixed"`` are accepted too).

    Raises:
        ValueError: an unknown name.
    """

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", canonical_name(self.name))

    @property
    def compute_dtype(self) -> str:
        dtype = POLICIES[self.name]
        return "float32" if dtype is None else str(dtype).removeprefix("torch.")

    @property
    def variable_dtype(self) -> str:
        return "float32"


_global = [Policy("float32")]


def set_global_policy(policy: str | Policy) -> None:
    """Make ``policy`` the one models compiled from now on use."""
    _global[0] = policy if isinstance(policy, Policy) else Policy(str(policy))


def global_policy() -> Policy:
    """The policy models are compiled with (``float32`` unless set)."""
    return _global[0]
