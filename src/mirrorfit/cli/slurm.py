"""`mirrorfit slurm`: print (or submit) a batch script running one worker per task.

    mirrorfit slurm --nodes 2 --gpus-per-node 4 --time 12:00:00 train.py --epochs 10
    mirrorfit slurm --ntasks-per-node 2 --submit train.py   # prints the job id

Everything after the script path goes to the script unchanged. Invalid options
exit with status 2 and one line naming the value and the fix, before anything
is written or submitted.
"""

from __future__ import annotations

import argparse
import sys

from mirrorfit.cluster.sbatch import SbatchOptions, SubmitError, build_script, parse_env, submit

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``slurm`` subcommand."""
    p = subparsers.add_parser(
        "slurm",
        help="write or submit a SLURM batch script (one worker per task)",
        description="Print a SLURM batch script that runs SCRIPT once per task with srun; "
        "with --submit, write it and submit it with sbatch.",
    )
    _add_resources(p)
    _add_job(p)
    p.add_argument("--gpu", action="store_true", help="the job needs GPUs (checks G > 0)")
    p.add_argument("--submit", action="store_true", help="submit with sbatch; print the job id")
    p.add_argument(
        "--script-file",
        default=None,
        metavar="PATH",
        help="where --submit writes the batch script (default JOB_NAME.sbatch)",
    )
    p.add_argument("script", help="the Python script every task runs")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="its arguments")
    p.set_defaults(func=_main)


def _add_resources(p: argparse.ArgumentParser) -> None:
    """What the job asks SLURM for: nodes, tasks, GPUs, cores, time."""
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=0,
        metavar="G",
        help="GPUs per node; one task per GPU (default 0: CPU workers)",
    )
    p.add_argument(
        "--ntasks-per-node",
        type=int,
        default=None,
        metavar="T",
        help="CPU workers per node when --gpus-per-node is 0 (default 1)",
    )
    p.add_argument(
        "--cpus-per-task",
        type=int,
        default=1,
        metavar="C",
        help="cores per task, also OMP_NUM_THREADS (default 1)",
    )
    p.add_argument(
        "--time",
        default=None,
        metavar="LIMIT",
        help="time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
    )


def _add_job(p: argparse.ArgumentParser) -> None:
    """How the job is named, logged and warned before its limit."""
    p.add_argument("--partition", default=None)
    p.add_argument("--job-name", default=None, help="default: the script's name")
    p.add_argument(
        "--output",
        default="%x-%j.out",
        metavar="PATTERN",
        help="log file pattern (default %(default)s, appended across requeues)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="export K=V for the workers (repeatable)",
    )
    p.add_argument(
        "--signal-seconds",
        type=int,
        default=120,
        metavar="S",
        help="send USR1 to the workers S seconds before the limit, so they back up and "
        "requeue the job (default 120; 0: none)",
    )


def _options(args: argparse.Namespace) -> SbatchOptions:
    return SbatchOptions(
        script=args.script,
        script_args=tuple(args.script_args),
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        ntasks_per_node=args.ntasks_per_node,
        cpus_per_task=args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        job_name=args.job_name,
        output=args.output,
        env=parse_env(args.env),
        signal_seconds=args.signal_seconds,
        gpu=args.gpu,
    )


def _main(args: argparse.Namespace) -> int:
    opts = _options(args)  # raises ValueError / FileNotFoundError: exit 2 in cli.main
    text = build_script(opts)
    if not args.submit:
        sys.stdout.write(text)
        return 0
    path = args.script_file or f"{opts.resolved_job_name}.sbatch"
    try:
        job_id = submit(text, path)
    except SubmitError as exc:
        print(f"mirrorfit slurm: error: {exc}", file=sys.stderr)
        return 2
    print(f"mirrorfit slurm: wrote {path}, submitted batch job {job_id}", file=sys.stderr)
    print(job_id)
    return 0
