"""Messages for names that are not in a registry: "did you mean 'adam'?".

Example:
    >>> unknown_name("optimizer", "adma", ["adam", "sgd"])
    "Unknown optimizer 'adma': did you mean 'adam'? Expected one of 'adam', 'sgd'."
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["unknown_name"]


def unknown_name(kind: str, received: str, choices: Sequence[str], other: str = "") -> str:
    """The message for an unknown ``kind`` name: the closest choice, then the choices.

    Args:
        kind: "optimizer", "loss", "metric", ...
        received: the name given.
        choices: the valid names.
        other: what else is accepted, e.g. "a Loss instance or a callable".

    Returns:
        One sentence or two, naming ``received`` and the likely fix.
    """
    lowered = {c.lower(): c for c in choices}
    key = received.lower()
    # difflib finds the candidates; a swap of two letters counts as one edit when choosing
    # among them ('adma' is 'adam' with a swap, though difflib alone prefers 'adamax')
    close = difflib.get_close_matches(key, list(lowered), n=3, cutoff=0.6)
    close.sort(key=lambda c: _edits(key, c))
    hint = f" did you mean {lowered[close[0]]!r}?" if close else ""
    expected = ", ".join(repr(c) for c in choices)
    tail = f", or {other}" if other else ""
    return f"Unknown {kind} {received!r}:{hint} Expected one of {expected}{tail}."


def _edits(a: str, b: str) -> int:
    """Edits from ``a`` to ``b``: insertions, deletions, substitutions, adjacent swaps."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]
