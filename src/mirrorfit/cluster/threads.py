"""CPU settings each worker needs: one sensible thread count, its own cores, and an
allocator that does not return memory to the OS every step.

Measured on a 2-core machine (TORCH-NOTES): two ranks at torch's default thread
count ran each step 5–20× slower than at one thread each; glibc's default malloc
thresholds cost ~2× on a small MLP through page faults. Workers that mirrorfit
starts itself are also bound to their own slice of the host's cores
(:func:`bind_worker`): the OS otherwise moves them between cores, each move
leaves a cold cache behind, and in data parallelism every step waits for the
slowest worker (``bench/scaling.py``: 2 workers' scaling efficiency on a CNN
went from 0.77–0.81 to 0.88–0.94 in medians of 3 runs).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Sequence

import torch

#: set to "0" to leave the placement of mirrorfit's CPU workers to the OS
BIND_ENV = "MIRRORFIT_CPU_BIND"
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


def cpu_slice(cores: Sequence[int], local_rank: int, local_world: int,
              threads: int) -> list[int] | None:
    """The cores of worker ``local_rank`` of ``local_world`` on a host with ``cores``:
    consecutive slices of ``threads`` cores. None (leave placement to the OS) unless
    ``threads`` is the workers' even share of the cores, that is, unless the job
    takes the whole host: binding a smaller job would stack two such jobs on the
    same cores and leave the others idle.

    Example:
        >>> cpu_slice([0, 1, 2, 3], 1, 2, 2)
        [2, 3]
    """
    if local_world < 1 or threads < 1 or threads != len(cores) // local_world:
        return None
    if not 0 <= local_rank < local_world:
        raise ValueError(f"local_rank must satisfy 0 <= local_rank < {local_world}; "
                         f"received {local_rank}.")
    return list(cores[local_rank * threads:(local_rank + 1) * threads])


def bind_worker(local_rank: int, local_world: int, threads: int) -> list[int] | None:
    """Bind this worker process (every thread it has now, and so every thread and
    process it starts later) to its :func:`cpu_slice`; return the cores, or None
    where nothing was bound (``MIRRORFIT_CPU_BIND=0``, a job smaller than the
    host, or no ``sched_setaffinity``)."""
    if os.environ.get(BIND_ENV, "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    cores = cpu_slice(sorted(os.sched_getaffinity(0)), local_rank, local_world, threads)
    if cores is None:
        return None
    pin_process(cores)
    return cores


def pin_process(cores: Sequence[int]) -> None:
    """Restrict every thread of this process to ``cores`` (Linux); threads and processes
    it starts later inherit them."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that has just ended
            os.sched_setaffinity(int(tid), cores)
