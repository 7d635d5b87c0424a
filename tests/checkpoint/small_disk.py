"""Run a script on a real, small tmpfs: a full disk without filling the machine's.

The script runs in a private mount namespace (``unshare -m`` as root, ``unshare -rm``
otherwise: a user namespace where the caller is root), where a tmpfs of the given
size is mounted on a fresh directory; the mount vanishes with the process and no
other process ever sees it. Where the machine allows neither (no ``unshare``, no
user namespaces, a container without CAP_SYS_ADMIN), the test is skipped with the
reason the system gave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.procs import Result, clean_env

#: the exit status of the wrapper when the mount itself fails
_MOUNT_FAILED = 97
_WRAPPER = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 97; shift 2; exec "$@"')


def run_on_tmpfs(script: Path, size: str, mountpoint: Path, *args: str,
                 timeout: float = 120) -> Result:
    """``python script MOUNTPOINT args`` with a tmpfs of ``size`` (e.g. '4m') mounted on
    ``mountpoint`` for that process only; skips the test where mounting is not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("cannot mount a small tmpfs: util-linux's `unshare` is not installed")
    flags = "-m" if os.geteuid() == 0 else "-rm"
    mountpoint.mkdir(parents=True, exist_ok=True)
    command = [unshare, flags, "sh", "-c", _WRAPPER, "sh", size, str(mountpoint),
               sys.executable, str(script), str(mountpoint), *args]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=clean_env())
    result = Result(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)
    mounted = any(line.get("mounted") for line in result.json_lines())
    if not mounted and (proc.returncode == _MOUNT_FAILED or proc.stderr.startswith("unshare:")):
        pytest.skip(f"cannot mount a small tmpfs (`unshare {flags}` then `mount -t tmpfs`): "
                    f"{proc.stderr.strip() or f'exit code {proc.returncode}'}")
    return result
