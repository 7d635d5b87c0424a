"""`mirrorfit slurm` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("slurm", help="(not yet available)")
    p.set_defaults(func=lambda args: print("mirrorfit slurm: not yet available") or 1)
