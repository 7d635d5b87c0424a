"""Which interface gloo should use: the one that routes to the master (no network
traffic; the two-host test in tests/launcher/test_two_hosts.py covers veth)."""

from __future__ import annotations

import socket

import pytest

from mirrorfit.cluster.interfaces import address_towards, interface_towards, interface_with_address
from mirrorfit.cluster.launcher import LaunchSpec, rendezvous_message

needs_linux_ifaces = pytest.mark.skipif(
    not hasattr(socket, "if_nameindex"), reason="no socket.if_nameindex on this platform"
)


@needs_linux_ifaces
def test_loopback_routes_through_the_loopback_interface() -> None:
    assert address_towards("127.0.0.1") == "127.0.0.1"
    loopback = interface_with_address("127.0.0.1")
    assert loopback is not None
    assert interface_towards("127.0.0.1") == loopback
    assert interface_towards("localhost") == loopback


def test_unknown_addresses_and_hosts_give_none() -> None:
    assert interface_with_address("203.0.113.77") is None  # TEST-NET-3: on no interface
    assert interface_towards("no-such-host.invalid") is None


def test_rendezvous_message_names_the_node_the_master_and_the_cause() -> None:
    try:
        try:
            raise TimeoutError("timed out after 60000ms")
        except TimeoutError as cause:
            raise RuntimeError("The connection to the C10d store has failed.") from cause
    except RuntimeError as exc:
        text = rendezvous_message(LaunchSpec(1, nnodes=2, node_rank=1, master="h:5"), "h", 5, exc)
    assert text == (
        "mirrorfit: node 1 of 2 could not form the job through h:5 (TimeoutError: timed out "
        "after 60000ms); start every node with the same --nnodes and --master, node 0 "
        "first, and check that this host reaches h on port 5.\n"
    )
