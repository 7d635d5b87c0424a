"""Two hosts on one machine: two network namespaces joined by a veth pair.

Each namespace has its own loopback and one end of the pair, with an address on
a private /24 that exists only inside the two namespaces (nothing is routed to
or from the machine's own interfaces). Processes started with :meth:`Host.popen`
run inside a namespace in their own session; :meth:`HostPair.close` kills what
is left of them (by id, namespace by namespace) and deletes both namespaces,
which also removes the veth pair.

Creating namespaces needs root and ``ip`` (iproute2); :func:`unavailable` says
why not, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

IP = shutil.which("ip")
SUBNET = "10.231.0"  # addresses live only inside the two namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if IP is None:
        raise FileNotFoundError("ip (iproute2) is not installed")
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """Why two namespaces cannot be made here (None when they can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run as root to test two hosts"
    if IP is None:
        return "ip (iproute2) is not installed; apt-get install iproute2 to test two hosts"
    probe = f"mfprobe{uuid.uuid4().hex[:8]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed here: {made.stderr.strip()}"
    try:
        ran = _ip("netns", "exec", probe, "true", check=False)
    finally:
        _ip("netns", "del", probe, check=False)
    if ran.returncode != 0:
        return f"ip netns exec failed here: {ran.stderr.strip()}"
    return None


@dataclass
class Host:
    """One namespace: its name, its veth interface and that interface's address."""

    netns: str
    interface: str
    address: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def popen(self, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start ``argv`` inside this namespace (own session, stdout/stderr piped)."""
        assert IP is not None
        proc = subprocess.Popen([IP, "netns", "exec", self.netns, *argv], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def tx_bytes(self) -> int:
        """Bytes sent through this host's veth interface so far."""
        path = f"/sys/class/net/{self.interface}/statistics/tx_bytes"
        out = _ip("netns", "exec", self.netns, "cat", path).stdout
        return int(out.strip())


class HostPair:
    """Two namespaces, ``a`` (10.231.0.1) and ``b`` (10.231.0.2), linked by veth."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a = Host(f"mf-{tag}-a", f"mf{tag}a", f"{SUBNET}.1")
        self.b = Host(f"mf-{tag}-b", f"mf{tag}b", f"{SUBNET}.2")
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        a, b = self.a, self.b
        for host in (a, b):
            _ip("netns", "add", host.netns)
        # create each end inside its namespace: nothing appears in the machine's own
        _ip("-n", a.netns, "link", "add", a.interface, "type", "veth", "peer", "name",
            b.interface, "netns", b.netns)
        for host in (a, b):
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.interface)
            _ip("-n", host.netns, "link", "set", "lo", "up")
            _ip("-n", host.netns, "link", "set", host.interface, "up")

    def close(self) -> None:
        """Kill what still runs in either namespace, then delete both."""
        for host in (self.a, self.b):
            for proc in host.procs:
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait(timeout=30)
            listed = _ip("netns", "pids", host.netns, check=False)
            for pid in listed.stdout.split():
                _kill(int(pid))
            _ip("netns", "del", host.netns, check=False)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
