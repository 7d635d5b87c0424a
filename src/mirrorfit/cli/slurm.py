"""`mirrorfit slurm`: print (or submit) a batch script running one worker per task.

    mirrorfit slurm --nodes 2 --gpus-per-node 4 --time 12:00:00 train.py --epochs 10
    mirrorfit slurm --ntasks-per-node 2 --submit train.py   # prints the job id
    mirrorfit slurm -N 2 --gres=gpu:2 -c 8 -A proj --setup 'module load cuda/12.4' train.py

sbatch's own short options work for the usual flags (-N -t -p -J -o -e -A -q -C -c).

Everything after the script path goes to the script unchanged. Invalid options
exit with status 2 and one line naming the value and the fix, before anything
is written or submitted.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from mirrorfit.cluster.sbatch import (
    SbatchOptions,
    SubmitError,
    TasksPerGpuError,
    build_script,
    parse_env,
    submit,
)
from mirrorfit.cluster.sbatch_values import parse_gres, parse_sbatch_options

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``slurm`` subcommand."""
    p = subparsers.add_parser(
        "slurm",
        allow_abbrev=False,  # else sbatch's --ntasks/--gpus (job totals) pass as per-node counts
        help="write or submit a SLURM batch script (one worker per task)",
        description="Print a SLURM batch script that runs SCRIPT once per task with srun; "
        "with --submit, write it and submit it with sbatch.",
    )
    _add_resources(p)
    _add_job(p)
    _add_site(p)
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
    p.add_argument("-N", "--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node",
        type=int,
        default=0,
        metavar="G",
        help="GPUs per node; one task per GPU (default 0: CPU workers)",
    )
    p.add_argument(
        "--gres",
        default=None,
        metavar="gpu[:TYPE]:G",
        help="GPUs per node the sbatch way (--gres gpu:2 is --gpus-per-node 2)",
    )
    p.add_argument(
        "--ntasks-per-node",
        type=int,
        default=None,
        metavar="T",
        help="CPU workers per node when --gpus-per-node is 0 (default 1)",
    )
    p.add_argument(
        "-c",
        "--cpus-per-task",
        type=int,
        default=None,
        metavar="C",
        help="cores per task, for the model's threads and data loading; also "
        "OMP_NUM_THREADS (default 1; GPU jobs that load data want more)",
    )
    for flag in ("-n", "--ntasks", "-G", "--gpus"):  # job totals: refused with the per-node line
        p.add_argument(flag, type=int, default=None, dest=flag.lstrip("-"), help=argparse.SUPPRESS)
    p.add_argument("--mem", default=None, metavar="SIZE", help="memory per node, e.g. 64G")
    p.add_argument(
        "-t",
        "--time",
        default=None,
        metavar="LIMIT",
        help="time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS",
    )


def _add_job(p: argparse.ArgumentParser) -> None:
    """How the job is named, logged and warned before its limit."""
    p.add_argument("-p", "--partition", default=None)
    p.add_argument("-J", "--job-name", default=None, help="default: the script's name")
    p.add_argument(
        "-o",
        "--output",
        default="%x-%j.out",
        metavar="PATTERN",
        help="log file pattern (default %(default)s, appended across requeues)",
    )
    p.add_argument(
        "-e",
        "--error",
        default=None,
        metavar="PATTERN",
        help="stderr file pattern (default: stderr goes to the --output file)",
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


def _add_site(p: argparse.ArgumentParser) -> None:
    """What a site asks of every job: account, QOS, features, modules, other options."""
    p.add_argument("-A", "--account", default=None, help="the account charged for the job")
    p.add_argument("-q", "--qos", default=None, help="quality of service")
    p.add_argument(
        "-C", "--constraint", default=None, metavar="FEATURES", help="node features, e.g. 'a100&ib'"
    )
    p.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a shell command run before srun, e.g. 'module load cuda/12.4' (repeatable)",
    )
    p.add_argument(
        "--prelude",
        default=None,
        metavar="FILE",
        help="a file of shell commands copied into the script before the --setup ones",
    )
    p.add_argument(
        "--sbatch-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other #SBATCH --KEY=VALUE, or KEY alone for a flag (repeatable)",
    )


def _gpus(args: argparse.Namespace) -> tuple[int, str | None]:
    """GPUs per node and type from --gpus-per-node and/or --gres (which must agree)."""
    if args.gres is None:
        return args.gpus_per_node, None
    count, kind = parse_gres(args.gres)
    if args.gpus_per_node not in (0, count):
        raise ValueError(
            f"--gres {args.gres} asks for {count} GPUs per node but --gpus-per-node is "
            f"{args.gpus_per_node}; keep one of them."
        )
    return count, kind


def _check_totals(args: argparse.Namespace) -> None:
    """sbatch's -n/--ntasks and -G/--gpus count the whole job; mirrorfit counts per node."""
    for names, per_node in ((("n", "ntasks"), "--ntasks-per-node"),
                            (("G", "gpus"), "--gpus-per-node")):
        total = next((getattr(args, n) for n in names if getattr(args, n) is not None), None)
        if total is None:
            continue
        flag = f"--{names[1]} {total}"
        if total < 1 or total % args.nodes:
            raise ValueError(f"{flag} counts the whole job, but mirrorfit slurm counts per node; "
                             f"use --nodes N and {per_node} T (N*T tasks or GPUs).")
        raise ValueError(f"{flag} counts the whole job, but mirrorfit slurm counts per node; "
                         f"write --nodes {args.nodes} {per_node} {total // args.nodes}.")


def _options(args: argparse.Namespace) -> SbatchOptions:
    _check_totals(args)
    gpus_per_node, gpu_type = _gpus(args)
    return SbatchOptions(
        script=args.script,
        script_args=tuple(args.script_args),
        nodes=args.nodes,
        gpus_per_node=gpus_per_node,
        gpu_type=gpu_type,
        ntasks_per_node=args.ntasks_per_node,
        cpus_per_task=1 if args.cpus_per_task is None else args.cpus_per_task,
        time=args.time,
        partition=args.partition,
        job_name=args.job_name,
        output=args.output,
        error=args.error,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        mem=args.mem,
        setup=tuple(args.setup),
        prelude=args.prelude,
        sbatch_options=parse_sbatch_options(args.sbatch_option),
        env=parse_env(args.env),
        signal_seconds=args.signal_seconds,
        gpu=args.gpu,
    )


def _without_ntasks(argv: list[str]) -> list[str]:
    """``argv`` (the options before the script) without ``--ntasks-per-node``."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ntasks-per-node":
            skip = True
        elif not arg.startswith("--ntasks-per-node="):
            kept.append(arg)
    return kept


def _corrected(args: argparse.Namespace) -> str:
    """The user's command line with the offending --ntasks-per-node left out."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    cut = argv.index(args.script) if args.script in argv else len(argv)
    head = _without_ntasks(argv[:cut])
    return shlex.join(["mirrorfit", *head, *argv[cut:]])


def _main(args: argparse.Namespace) -> int:
    try:
        opts = _options(args)  # ValueError / FileNotFoundError: exit 2 in cli.main
    except TasksPerGpuError as exc:
        raise ValueError(f"{exc} Write: {_corrected(args)}") from None
    if opts.gpus_per_node and args.cpus_per_task is None:
        print(
            "mirrorfit slurm: note: each GPU task gets 1 CPU core (SLURM's default), for its "
            "threads and its data loading; ask for more with --cpus-per-task, e.g. -c 8.",
            file=sys.stderr,
        )
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
