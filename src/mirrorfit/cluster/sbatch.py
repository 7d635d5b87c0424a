"""Write (and submit) a SLURM batch script that runs one worker per task.

:class:`SbatchOptions` holds the job's shape and is validated when built, so no
script is written or submitted from impossible options. :func:`build_script`
renders it; :func:`submit` writes it and calls ``sbatch``.

Quoting: the ``export`` and ``srun`` lines are run by bash, and every user value
there goes through :func:`shlex.quote`. ``#SBATCH`` lines are read by sbatch,
whose parser knows double quotes but not single ones, so values on those lines
are restricted to characters :func:`shlex.quote` leaves alone (letters, digits,
``_@%+=:,./-``): nothing there can need quoting or end the comment.

Example:
    >>> opts = SbatchOptions("train.py", nodes=2, gpus_per_node=4)  # doctest: +SKIP
    >>> print(build_script(opts))  # doctest: +SKIP
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "SbatchOptions",
    "SubmitError",
    "build_script",
    "parse_env",
    "parse_job_id",
    "parse_time_limit",
    "submit",
]

# use with fullmatch: "$" would also match before a trailing newline
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_DIRECTIVE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
_DIGITS = re.compile(r"[0-9]+")
_SUBMITTED = re.compile(r"Submitted batch job (\d+)")
_MAX_SIGNAL_SECONDS = 65535  # SLURM's limit for --signal=SIG@TIME
_UNLIMITED = ("UNLIMITED", "INFINITE")


class SubmitError(RuntimeError):
    """``sbatch`` refused the script or printed no job id."""


def parse_time_limit(text: str) -> int | None:
    """Seconds of a SLURM ``--time`` value; None for ``UNLIMITED``/``INFINITE``.

    Accepts SLURM's forms ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``. Minutes and seconds after the first field must be < 60 and
    hours after a day count < 24 (SLURM silently rolls these over; here they are
    treated as typos).

    Raises:
        ValueError: the value, the accepted forms and an example.
    """
    value = text.strip()
    if value.upper() in _UNLIMITED:
        return None
    days, dash, clock = value.partition("-") if "-" in value else ("0", "", value)
    fields = clock.split(":")
    if not 1 <= len(fields) <= 3 or not all(_DIGITS.fullmatch(part) for part in [days, *fields]):
        raise _time_error(text, "it is not one of SLURM's forms")
    numbers = [int(part) for part in fields]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        units, bounds = [3600, 60, 1], [24, 60, 60]
    else:  # MM, MM:SS, HH:MM:SS; the leading field is unbounded ("90", "36:00:00")
        units = {1: [60], 2: [60, 1], 3: [3600, 60, 1]}[len(numbers)]
        bounds = [0, 60, 60]
    for number, bound in zip(numbers, bounds, strict=False):
        if bound and number >= bound:
            raise _time_error(text, f"the field {number} must be below {bound}")
    total = int(days) * 86400 + sum(n * u for n, u in zip(numbers, units, strict=False))
    if total <= 0:
        raise _time_error(text, "the limit must be longer than 0 seconds")
    return total


def _time_error(text: str, why: str) -> ValueError:
    return ValueError(
        f"--time {text!r} is not a valid SLURM time limit ({why}); use MM, MM:SS, "
        "HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. --time 02:00:00 or --time 1-12."
    )


def _check_directive_value(flag: str, value: str) -> None:
    if not _SAFE_DIRECTIVE.fullmatch(value):
        raise ValueError(
            f"{flag} {value!r} contains characters that an #SBATCH line cannot carry safely "
            "(spaces, quotes, '#', '$', newlines…); use only letters, digits and _@%+=:,./-"
        )


def _check_env(env: Mapping[str, str]) -> None:
    for name in env:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(
                f"--env name {name!r} is not a valid environment variable name; "
                "use letters, digits and '_', not starting with a digit "
                "(e.g. --env NCCL_DEBUG=INFO)."
            )


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``["K=V", …]`` -> ``{"K": "V"}``; a value may contain ``=``.

    Raises:
        ValueError: an item has no ``=`` or an invalid name.
    """
    env: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--env {item!r} has no '='; write it as NAME=VALUE, e.g. --env A=1.")
        env[name] = value
    _check_env(env)
    return env


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
        cpus_per_task: CPU cores per task; also the task's ``OMP_NUM_THREADS``.
        time: SLURM time limit (see :func:`parse_time_limit`); None: partition default.
        partition, job_name, output: as ``#SBATCH --partition/--job-name/--output``;
            job name defaults to the script's stem, output to ``%x-%j.out``.
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
            names the value and the fix.
        FileNotFoundError: ``script`` does not exist.
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
    env: Mapping[str, str] = field(default_factory=dict)
    signal_seconds: int = 120
    gpu: bool = False
    python: str = sys.executable

    def __post_init__(self) -> None:
        self._check_counts()
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
        for flag, value in (
            ("--partition", self.partition),
            ("--job-name", self.job_name),
            ("--output", self.output),
        ):
            if value is not None:
                _check_directive_value(flag, value)
        _check_env(self.env)
        path = Path(self.script)
        if not path.is_file():
            raise FileNotFoundError(
                f"script {self.script!r} does not exist (looked at {path.resolve()}); "
                "pass the path of the Python file every task should run."
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
        if self.gpus_per_node and self.ntasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"--ntasks-per-node {self.ntasks_per_node} conflicts with --gpus-per-node "
                f"{self.gpus_per_node}: GPU jobs run one task per GPU; drop --ntasks-per-node."
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
        return stem if _SAFE_DIRECTIVE.fullmatch(stem) else "mirrorfit"


def _directives(opts: SbatchOptions) -> list[str]:
    lines = [
        f"--job-name={opts.resolved_job_name}",
        f"--nodes={opts.nodes}",
        f"--ntasks-per-node={opts.tasks_per_node}",
        f"--cpus-per-task={opts.cpus_per_task}",
    ]
    if opts.gpus_per_node:
        lines.append(f"--gres=gpu:{opts.gpus_per_node}")
    if opts.time is not None:
        lines.append(f"--time={opts.time.strip()}")
    if opts.partition is not None:
        lines.append(f"--partition={opts.partition}")
    lines += [f"--output={opts.output}", "--requeue", "--open-mode=append"]
    if opts.signal_seconds:
        lines.append(f"--signal=USR1@{opts.signal_seconds}")
    # values were checked against _SAFE_DIRECTIVE, so shlex.quote leaves them as they are
    return [f"#SBATCH {shlex.quote(line)}" for line in lines]


def build_script(opts: SbatchOptions) -> str:
    """The batch script for ``opts``: ``#SBATCH`` lines, exports, one ``srun``.

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
        "set -eu",
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
