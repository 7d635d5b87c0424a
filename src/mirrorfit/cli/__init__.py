"""The ``mirrorfit`` command: ``devices``, ``run``, ``slurm`` and ``plot`` subcommands.

Each subcommand lives in its own module with ``register(subparsers)`` that adds
its parser and sets ``func`` (a callable taking the parsed args and returning an
exit status).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

_SUBCOMMANDS = ("devices", "run", "slurm", "plot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mirrorfit", description="Distributed training for PyTorch, Keras-simple."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"mirrorfit.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for messages that show a corrected command line
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"mirrorfit {args.command}: error: {exc}", file=sys.stderr)
        return 2
