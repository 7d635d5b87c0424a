"""Which network interface gloo should use to reach the other nodes.

gloo picks its address from ``GLOO_SOCKET_IFNAME`` or, when that is unset, from
this host's name. On hosts where the name resolves to a loopback address (Debian's
``127.0.1.1 host`` line) or to an address of another interface, each worker then
tells its peers to connect to ``127.0.0.1`` or to an unreachable address, and the
group fails after its timeout with ``Gloo connectFullMesh failed … Connection
refused, remote=[127.0.0.1]`` (seen with two hosts as two network namespaces).
The interface that the kernel would route the master's address through is the one
the peers can reach, so :func:`interface_towards` names it.

Example:
    >>> interface_towards("127.0.0.1")  # doctest: +SKIP
    'lo'
"""

from __future__ import annotations

import contextlib
import socket
import struct

__all__ = ["address_towards", "interface_towards", "interface_with_address"]

_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


def address_towards(host: str, port: int = 9) -> str:
    """This host's IPv4 address on the route to ``host`` (no packet is sent).

    Raises:
        OSError: ``host`` does not resolve or has no route.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((socket.gethostbyname(host), port))  # UDP: only picks the route
        return str(sock.getsockname()[0])


def interface_with_address(address: str) -> str | None:
    """The name of the interface holding IPv4 ``address``; None when none does or
    the platform cannot say (only Linux is asked)."""
    try:
        import fcntl  # POSIX only
    except ImportError:
        return None
    if not hasattr(socket, "if_nameindex"):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # no IPv4 address, or not Linux
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
                if socket.inet_ntoa(reply[20:24]) == address:
                    return name
    return None


def interface_towards(host: str) -> str | None:
    """The interface this host reaches ``host`` through (``"lo"`` for itself); None
    when the route or the interface cannot be found."""
    try:
        return interface_with_address(address_towards(host))
    except OSError:
        return None
