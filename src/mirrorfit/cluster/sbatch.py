"""Write (and submit) a SLURM batch script that runs one worker per task.

:class:`SbatchOptions` holds the job's shape and is validated when built, so no
script is written or submitted from impossible options. :func:`build_script`
renders it; :func:`submit` writes it and calls ``sbatch``.

Quoting: the ``export`` and ``srun`` lines are run by bash, and every user value
there goes through :func:`shlex.quote`. ``#SBATCH`` lines are read by sbatch, so
their values are restricted to characters that sbatch passes on unchanged and
that cannot end the comment (``cluster.sbatch_values``). ``--setup`` lines and
the ``--prelude`` file are the user's own shell commands, written as given
between ``set -e`` and ``set -u`` (module scripts often read unset variables).

Example:
    >>> opts = SbatchOptions("train.py", nodes=2, gpus_per_node=4)  # doctest: +SKIP
    >>> print(build_script(opts))  # doctest: +SKIP
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mirrorfit.cluster.sbatch_values import (
    check_constraint,
    check_directive_value,
    check_env,
    check_mem,
    check_setup_line,
    parse_env,
    parse_time_limit,
    read_prelude,
)

__all__ = [
    "SbatchOptions",
    "SubmitError",
    "TasksPerGpuError",
    "build_script",
    "parse_env",
    "parse_job_id",
    "parse_time_limit",
    "submit",
]

_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
_MAX_SIGNAL_SECONDS = 65535  # SLURM's limit for --signal=SIG@TIME


class SubmitError(RuntimeError):
    """``sbatch`` refused the script or printed no job id."""


class TasksPerGpuError(ValueError):
    """``--ntasks-per-node`` differs from the GPUs per node (GPU jobs run one task per
    GPU); ``mirrorfit slurm`` shows the corrected command line."""


@dataclass(frozen=True)
class SbatchOptions:
    """The shape of a SLURM job; validated on construction.

    Args:
        script: the Python script every task runs (must exist).
        script_args: its arguments, passed verbatim.
        nodes: nodes to allocate (>= 1).
        gpus_per_node: GPUs per node; when > 0 the job runs one task per GPU.
        ntasks_per_node: CPU workers per node when ``gpus_per_node`` is 0 (default 1);
            with GPUs it may only repeat ``gpus_per_node``.
        cpus_per_task: CPU cores per task, for the model's threads and for data
            loading (DataLoader workers); also the task's ``OMP_NUM_THREADS``.
        time: SLURM time limit (see :func:`parse_time_limit`); None: partition default.
        partition, job_name, output, error, account, qos: as the ``#SBATCH`` options
            of those names; job name defaults to the script's stem, output to
            ``%x-%j.out``, error to none (stderr goes to the output file).
        constraint: node features, e.g. ``"a100&ib"`` (``#SBATCH --constraint``).
        mem: memory per node, e.g. ``"64G"`` (``#SBATCH --mem``; 0: all of it).
        gpu_type: the GPU type in ``--gres=gpu:TYPE:G`` (e.g. ``"a100"``).
        setup: shell commands run before ``srun``, e.g. ``("module purge",
            "module load cuda/12.4")``; a failing one ends the job.
        prelude: a file of shell commands written before ``setup`` (its text is
            copied into the script).
        sbatch_options: further ``#SBATCH --KEY=VALUE`` lines (None: a flag); see
            :func:`mirrorfit.cluster.sbatch_values.parse_sbatch_options`.
        env: variables exported before ``srun`` (after OMP_NUM_THREADS, so may override it).
        signal_seconds: send USR1 to the tasks this long before the time limit (default
            120; SLURM may send it up to 60 s earlier); 0 sends none. mirrorfit's
            workers then back up at an agreed step and requeue the job
            (``cluster.preemption``); leave time for K steps plus one backup write.
            A script that does not use mirrorfit must handle USR1 itself: Python's
            default action for it ends the process.
        gpu: the job needs GPUs (an error when ``gpus_per_node`` is 0).
        python: the interpreter the tasks run; this one by default.

    Raises:
        ValueError: a value SLURM would reject or that makes no job; the message
            names the value and the fix (:class:`TasksPerGpuError` for more tasks
            than GPUs per node).
        FileNotFoundError: ``script`` or ``prelude`` does not exist.
    """

    script: str
    script_args: tuple[str, ...] = ()
    nodes: int = 1
    gpus_per_node: int = 0
    ntasks_per_node: int | None = None
    cpus_per_task: int = 1
    time: str | None = None
    partition: str | None = None
    job_name: str | None = None
    output: str = "%x-%j.out"
    error: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None
    gpu_type: str | None = None
    setup: tuple[str, ...] = ()
    prelude: str | None = None
    sbatch_options: Mapping[str, str | None] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    signal_seconds: int = 120
    gpu: bool = False
    python: str = sys.executable

    def __post_init__(self) -> None:
        self._check_counts()
        self._check_time()
        for flag, value in (
            ("--partition", self.partition),
            ("--job-name", self.job_name),
            ("--output", self.output),
            ("--error", self.error),
            ("--account", self.account),
            ("--qos", self.qos),
            ("--gres gpu type", self.gpu_type),
        ):
            if value is not None:
                check_directive_value(flag, value)
        if self.constraint is not None:
            check_constraint(self.constraint)
        if self.mem is not None:
            check_mem(self.mem)
        for line in self.setup:
            check_setup_line(line)
        if self.prelude is not None:
            read_prelude(self.prelude)
        check_env(self.env)
        path = Path(self.script)
        if not path.is_file():
            raise FileNotFoundError(
                f"script {self.script!r} does not exist (looked at {path.resolve()}); "
                "pass the path of the Python file every task should run."
            )

    def _check_time(self) -> None:
        limit = parse_time_limit(self.time) if self.time is not None else None
        if not 0 <= self.signal_seconds <= _MAX_SIGNAL_SECONDS:
            raise ValueError(
                f"--signal-seconds {self.signal_seconds} must be in 0..{_MAX_SIGNAL_SECONDS} "
                "(0 sends no signal)."
            )
        if limit is not None and self.signal_seconds >= limit:
            raise ValueError(
                f"--signal-seconds {self.signal_seconds} is not shorter than --time {self.time} "
                f"({limit} s): the warning would come before the job starts; lower it or "
                "raise --time."
            )

    def _check_counts(self) -> None:
        for flag, value in (("--nodes", self.nodes), ("--cpus-per-task", self.cpus_per_task)):
            if value < 1:
                raise ValueError(f"{flag} {value} must be >= 1.")
        if self.gpus_per_node < 0:
            raise ValueError(f"--gpus-per-node {self.gpus_per_node} must be >= 0.")
        if self.ntasks_per_node is not None and self.ntasks_per_node < 1:
            raise ValueError(f"--ntasks-per-node {self.ntasks_per_node} must be >= 1.")
        if self.gpu and self.gpus_per_node == 0:
            raise ValueError(
                "--gpu asks for GPUs but --gpus-per-node is 0; pass --gpus-per-node G "
                "(one task per GPU), or drop --gpu to run on CPUs."
            )
        if self.gpu_type is not None and self.gpus_per_node == 0:
            raise ValueError(f"a GPU type ({self.gpu_type!r}) needs --gpus-per-node G > 0.")
        if self.gpus_per_node and self.ntasks_per_node not in (None, self.gpus_per_node):
            raise TasksPerGpuError(
                f"--ntasks-per-node {self.ntasks_per_node} conflicts with "
                f"{self.gpus_per_node} GPUs per node: mirrorfit runs one task per GPU, so "
                f"the job has {self.gpus_per_node} tasks per node; drop --ntasks-per-node "
                "(use --cpus-per-task for data-loading cores)."
            )

    @property
    def tasks_per_node(self) -> int:
        """One per GPU when there are GPUs, else ``ntasks_per_node`` (default 1)."""
        return self.gpus_per_node or self.ntasks_per_node or 1

    @property
    def resolved_job_name(self) -> str:
        """``job_name``, else the script's stem when it is a safe name, else 'mirrorfit'."""
        if self.job_name:
            return self.job_name
        stem = Path(self.script).stem
        try:
            check_directive_value("--job-name", stem)
        except ValueError:
            return "mirrorfit"
        return stem


def _directives(opts: SbatchOptions) -> list[str]:
    lines = [
        f"--job-name={opts.resolved_job_name}",
        f"--nodes={opts.nodes}",
        f"--ntasks-per-node={opts.tasks_per_node}",
        f"--cpus-per-task={opts.cpus_per_task}",
    ]
    if opts.gpus_per_node:
        kind = f"gpu:{opts.gpu_type}" if opts.gpu_type else "gpu"
        lines.append(f"--gres={kind}:{opts.gpus_per_node}")
    for name, value in (
        ("time", opts.time.strip() if opts.time is not None else None),
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("constraint", opts.constraint),
        ("mem", opts.mem),
    ):
        if value is not None:
            lines.append(f"--{name}={value}")
    lines.append(f"--output={opts.output}")
    if opts.error is not None:
        lines.append(f"--error={opts.error}")
    lines += ["--requeue", "--open-mode=append"]
    if opts.signal_seconds:
        lines.append(f"--signal=USR1@{opts.signal_seconds}")
    lines += [f"--{k}" if v is None else f"--{k}={v}" for k, v in opts.sbatch_options.items()]
    # every value was checked (cluster.sbatch_values): sbatch reads it as written
    return [f"#SBATCH {line}" for line in lines]


def _setup(opts: SbatchOptions) -> list[str]:
    """The prelude's lines and each --setup command, as the user wrote them."""
    lines: list[str] = []
    if opts.prelude is not None:
        lines += [f"# --prelude {opts.prelude}", read_prelude(opts.prelude)]
    if opts.setup:
        lines += ["# --setup", *opts.setup]
    return lines


def build_script(opts: SbatchOptions) -> str:
    """The batch script for ``opts``: ``#SBATCH`` lines, set-up, exports, one ``srun``.

    ``srun`` starts ``nodes * tasks_per_node`` tasks, one worker each, and ends
    them all when one fails (``--kill-on-bad-exit=1``); each worker finds its rank
    through :class:`mirrorfit.cluster.slurm.SlurmEnvironment`.
    """
    script = str(Path(opts.script).resolve())
    command = [opts.python, script, *opts.script_args]
    env = {"OMP_NUM_THREADS": str(opts.cpus_per_task), **opts.env}
    lines = [
        "#!/bin/bash",
        *_directives(opts),
        "# Written by `mirrorfit slurm`: one worker per task, ranks from SLURM_PROCID.",
        "set -e",
        *_setup(opts),
        "set -u",
        *(f"export {name}={shlex.quote(value)}" for name, value in env.items()),
        # since SLURM 22.05 srun no longer inherits --cpus-per-task from sbatch
        f"srun --kill-on-bad-exit=1 --cpus-per-task={opts.cpus_per_task} "
        + " ".join(shlex.quote(part) for part in command),
    ]
    return "\n".join(lines) + "\n"


def parse_job_id(text: str) -> int:
    """The job id in sbatch's ``Submitted batch job N`` line.

    Raises:
        SubmitError: no such line (the text is echoed).
    """
    match = _SUBMITTED.search(text)
    if match is None:
        raise SubmitError(f"sbatch printed no 'Submitted batch job N' line; it printed {text!r}")
    return int(match[1])


def submit(script_text: str, path: str | Path, sbatch: str = "sbatch") -> int:
    """Write ``script_text`` to ``path`` and submit it with ``sbatch``; the job id.

    Raises:
        FileNotFoundError: ``sbatch`` is not on PATH.
        SubmitError: sbatch failed (its stderr is in the message) or printed no job id.
    """
    target = Path(path)
    target.write_text(script_text)
    target.chmod(0o755)
    try:
        result = subprocess.run(
            [sbatch, str(target)], capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{sbatch!r} was not found on PATH; run on a SLURM login node, or print the "
            f"script without --submit (written to {target})."
        ) from None
    if result.returncode != 0:
        raise SubmitError(
            f"sbatch {target} failed (exit {result.returncode}): {result.stderr.strip()}"
        )
    return parse_job_id(result.stdout)
