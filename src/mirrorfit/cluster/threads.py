"""CPU settings each worker needs: one sensible thread count, and an allocator
that does not return memory to the OS every step.

Measured on a 2-core machine (TORCH-NOTES): two ranks at torch's default thread
count ran each step 5–20× slower than at one thread each; glibc's default malloc
thresholds cost ~2× on a small MLP through page faults.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def threads_per_worker(local_workers: int) -> int:
    """Threads each of ``local_workers`` processes should use on this host.

    ``MIRRORFIT_NUM_THREADS`` (or ``OMP_NUM_THREADS``) overrides the default of
    ``cores // local_workers`` (at least 1).
    """
    for key in ("MIRRORFIT_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(key)
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{key} must be a positive integer, received {value!r}.") from None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, local_workers))


def configure_cpu(num_threads: int | None) -> None:
    """Set torch's intra-op threads (None: leave them as the user or torch set them)
    and steady malloc thresholds (Linux/glibc only)."""
    if num_threads is not None and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    if sys.platform.startswith("linux") and not os.environ.get("MIRRORFIT_KEEP_MALLOC"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        except (OSError, AttributeError):  # musl or no glibc: keep the defaults
            pass
