"""SLURM host-list expansion (pure logic)."""

from __future__ import annotations

import re

import pytest

from mirrorfit.cluster.hostlist import HostlistError, expand_hostlist, first_host, iter_hosts


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("vm", ["vm"]),
        ("a,b", ["a", "b"]),
        (" a , b ", ["a", "b"]),
        ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
        ("node[1-3]-ib", ["node1-ib", "node2-ib", "node3-ib"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[001-2]", ["n001", "n002"]),
        ("n[0-1]", ["n0", "n1"]),
        ("n[5]", ["n5"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("x[1,3]y[07-08]z", ["x1y07z", "x1y08z", "x3y07z", "x3y08z"]),
        ("gpu[01-02],cpu[1-2]-ib,login", ["gpu01", "gpu02", "cpu1-ib", "cpu2-ib", "login"]),
        ("[1-2]", ["1", "2"]),
    ],
)
def test_expand(text: str, hosts: list[str]) -> None:
    assert expand_hostlist(text) == hosts
    assert first_host(text) == hosts[0]


def test_first_host_does_not_expand_a_huge_range() -> None:
    assert first_host("n[0000000-9999999]x[1-9999999]") == "n0000000x1"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("a,,b", "empty host name"),
        ("a,", "empty host name"),
        ("n[1-3", "never closed"),
        ("n1-3]", "without '['"),
        ("n[[1]]", "nested"),
        ("n[3-1]", "backwards"),
        ("n[a-b]", "bad range"),
        ("n[1-]", "bad range"),
        ("n[]", "bad range"),
        ("n[1,,2]", "bad range"),
        ("n[²]", "bad range"),
    ],
)
def test_errors_echo_the_text(text: str, why: str) -> None:
    with pytest.raises(HostlistError, match=re.escape(why)) as info:
        expand_hostlist(text)
    assert repr(text) in str(info.value)
    assert "gpu[01-04,07]" in str(info.value)  # an example of the right form


def test_errors_are_value_errors_and_raised_before_any_host() -> None:
    hosts = iter_hosts("good1,bad[")
    with pytest.raises(ValueError):
        next(hosts)
