"""Warnings about settings that run but waste time or train wrongly, issued at the line
of the user's script that caused them (not inside mirrorfit).

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("batch_size=256 is larger than the 100 samples")
    >>> str(caught[0].message)
    'batch_size=256 is larger than the 100 samples'
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["warn"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message)`` attributed to the first caller outside mirrorfit, so the
    warning names the user's line (``train.py:12: UserWarning: ...``) and Python's
    filters (``-W``, ``warnings.filterwarnings``) apply as usual.

    Args:
        message: one line, with the numbers and the fix.
        category: the warning class.
    """
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
