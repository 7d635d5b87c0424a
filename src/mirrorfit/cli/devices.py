"""`mirrorfit devices` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("devices", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mirrorfit devices: not yet available") or 1)
