"""``mirrorfit plot``: draw a CSVLogger log as training curves (needs matplotlib).

    mirrorfit plot training.csv -o history.png
"""

from __future__ import annotations

import argparse

from mirrorfit.plotting import plot_history, read_csv_log


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plot", help="draw a CSVLogger log (loss and metrics per epoch)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log", help="a CSV file written by mirrorfit.callbacks.CSVLogger")
    p.add_argument("-o", "--output", default="history.png",
                   help="the image to write (.png, .svg, .pdf; default history.png)")
    p.add_argument("--separator", default=",", help="the CSV field separator (default ,)")
    p.add_argument("--title", default=None, help="a title above the panels")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    epochs, history = read_csv_log(args.log, args.separator)
    path = plot_history(history, args.output, epochs, title=args.title)
    print(f"wrote {path} ({len(epochs)} epochs: {', '.join(sorted(history))})")
    return 0
