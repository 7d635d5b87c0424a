"""Expand SLURM host lists such as ``gpu[01-04,07],login1`` into host names.

The syntax (what ``scontrol show hostnames`` accepts): items are separated by
commas outside brackets; an item is literal text with any number of bracket
groups; a group holds comma-separated numbers and ``lo-hi`` ranges; a number
written with leading zeros keeps its width (``[08-10]`` -> ``08 09 10``). Several
groups in one item expand as a cartesian product, left to right
(``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1 r2n2``).

Expansion is lazy (:func:`iter_hosts`), so :func:`first_host` of a list with a
huge range costs nothing.

Example:
    >>> expand_hostlist("gpu[01-03,07],node[1-2]-ib")
    ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'node1-ib', 'node2-ib']
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["HostlistError", "expand_hostlist", "first_host", "iter_hosts"]

# One piece of an item: literal text, or the numbers of one bracket group.
_Piece = str | list[tuple[int, int, int]]
_DIGITS = re.compile(r"[0-9]+")


class HostlistError(ValueError):
    """The text is not a valid SLURM host list."""


def _fail(text: str, why: str) -> HostlistError:
    return HostlistError(
        f"invalid SLURM host list {text!r}: {why}. "
        "Expected e.g. 'node1,node2', 'gpu[01-04,07]' or 'r[1-2]n[1-3]-ib'."
    )


def _split_items(text: str) -> list[str]:
    """Split on the commas that are outside brackets; check bracket balance."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            if depth:
                raise _fail(text, f"nested '[' at position {i}")
            depth = 1
        elif char == "]":
            if not depth:
                raise _fail(text, f"']' without '[' at position {i}")
            depth = 0
        elif char == "," and not depth:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise _fail(text, "'[' is never closed")
    items.append(text[start:])
    if any(not item.strip() for item in items):
        raise _fail(text, "empty host name (two commas in a row, or a leading/trailing comma)")
    return [item.strip() for item in items]


def _parse_group(text: str, group: str) -> list[tuple[int, int, int]]:
    """``"01-04,7"`` -> ``[(1, 4, 2), (7, 7, 1)]`` as (low, high, width)."""
    ranges = []
    for part in group.split(","):
        low, sep, high = part.partition("-")
        if not _DIGITS.fullmatch(low) or (sep and not _DIGITS.fullmatch(high)):
            raise _fail(text, f"bad range {part!r} in [{group}] (use numbers: '3' or '01-04')")
        high = high if sep else low
        if int(high) < int(low):
            raise _fail(text, f"range {part!r} runs backwards")
        width = len(low) if low.startswith("0") and len(low) > 1 else 1
        ranges.append((int(low), int(high), width))
    return ranges


def _parse_item(text: str, item: str) -> list[_Piece]:
    """``"node[1-2]-ib"`` -> ``["node", [(1, 2, 1)], "-ib"]``."""
    pieces: list[_Piece] = []
    rest = item
    while "[" in rest:
        literal, _, rest = rest.partition("[")
        group, _, rest = rest.partition("]")
        if literal:
            pieces.append(literal)
        pieces.append(_parse_group(text, group))
    if rest:
        pieces.append(rest)
    return pieces


def _expand(pieces: list[_Piece], prefix: str = "") -> Iterator[str]:
    if not pieces:
        yield prefix
        return
    head, tail = pieces[0], pieces[1:]
    if isinstance(head, str):
        yield from _expand(tail, prefix + head)
        return
    for low, high, width in head:
        for number in range(low, high + 1):
            yield from _expand(tail, f"{prefix}{number:0{width}d}")


def iter_hosts(hostlist: str) -> Iterator[str]:
    """Yield the host names of a SLURM host list in order.

    The whole list is checked before the first name is yielded.

    Raises:
        HostlistError: the text is empty or malformed; the message echoes it.
    """
    text = hostlist.strip()
    if not text:
        raise _fail(hostlist, "it is empty")
    parsed = [_parse_item(text, item) for item in _split_items(text)]
    for pieces in parsed:
        yield from _expand(pieces)


def expand_hostlist(hostlist: str) -> list[str]:
    """All host names of a SLURM host list (``"a[1-2],b"`` -> ``["a1", "a2", "b"]``)."""
    return list(iter_hosts(hostlist))


def first_host(hostlist: str) -> str:
    """The first host name of a SLURM host list, without expanding the rest."""
    return next(iter(iter_hosts(hostlist)))
