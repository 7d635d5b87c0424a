"""Checks for the values a batch script carries, each with a message that names the
value, what was expected and an example (``cluster.sbatch`` uses them).

Three kinds of text reach a batch script:

- ``#SBATCH`` values, read by sbatch: a blank ends the value, quotes and
  backslashes are taken away, ``#`` starts a comment, and ``$VAR`` is *not*
  expanded. Plain values (names, paths) may hold letters, digits and
  ``_@%+=:,./-``; constraints and ``--sbatch-option`` values also SLURM's
  operators ``&|[]*!()``, which sbatch passes on as they are.
- ``export`` and ``srun`` arguments, run by bash: always :func:`shlex.quote`-d
  (``cluster.sbatch``).
- ``--setup`` lines and the ``--prelude`` file: shell commands the user means to
  run (``module load …``), written as they are, one command per line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "MANAGED_OPTIONS",
    "check_constraint",
    "check_directive_value",
    "check_env",
    "check_mem",
    "check_setup_line",
    "parse_env",
    "parse_gres",
    "parse_sbatch_options",
    "parse_time_limit",
    "read_prelude",
]

# use with fullmatch: "$" would also match before a trailing newline
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_DIRECTIVE = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
_SAFE_EXPRESSION = re.compile(r"[\w@%+=:,./\-&|\[\]*!()]+", re.ASCII)
_OPTION_NAME = re.compile(r"[a-z][a-z0-9-]*")
_MEM = re.compile(r"[0-9]+[KMGTkmgt]?")
_GRES = re.compile(r"gpu(?::([A-Za-z0-9_.-]+))?:([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
_UNLIMITED = ("UNLIMITED", "INFINITE")

#: sbatch options that mirrorfit writes itself -> the `mirrorfit slurm` flag to use
MANAGED_OPTIONS = {
    "job-name": "--job-name", "nodes": "--nodes", "ntasks-per-node": "--ntasks-per-node",
    "ntasks": "--nodes and --ntasks-per-node", "cpus-per-task": "--cpus-per-task",
    "gres": "--gpus-per-node (or --gres gpu:G)", "gpus": "--gpus-per-node",
    "gpus-per-node": "--gpus-per-node", "gpus-per-task": "--gpus-per-node",
    "time": "--time", "partition": "--partition", "output": "--output", "error": "--error",
    "account": "--account", "qos": "--qos", "constraint": "--constraint", "mem": "--mem",
    "requeue": "nothing (mirrorfit always requeues)", "no-requeue": "--signal-seconds 0",
    "open-mode": "nothing (always append)", "signal": "--signal-seconds",
}


def check_directive_value(flag: str, value: str) -> None:
    """A plain ``#SBATCH`` value: letters, digits and ``_@%+=:,./-`` only.

    Raises:
        ValueError: naming the flag, the value and the allowed characters.
    """
    if not _SAFE_DIRECTIVE.fullmatch(value):
        hint = " (sbatch does not expand $VARIABLES)" if "$" in value else ""
        raise ValueError(
            f"{flag} {value!r} contains characters that an #SBATCH line cannot carry safely "
            f"(spaces, quotes, '#', '$', newlines…){hint}; use only letters, digits and "
            "_@%+=:,./-"
        )


def _check_expression(flag: str, value: str, example: str) -> None:
    if not _SAFE_EXPRESSION.fullmatch(value):
        raise ValueError(
            f"{flag} {value!r} contains characters that an #SBATCH line cannot carry "
            "(spaces, quotes, backslashes, '#', '$', newlines); use letters, digits, "
            f"_@%+=:,./- and SLURM's operators &|[]*!(); e.g. {example}"
        )


def check_constraint(value: str) -> None:
    """A node feature expression such as ``a100&ib`` or ``[rack1|rack2]``."""
    _check_expression("--constraint", value, "--constraint 'v100&ib'")


def check_mem(value: str) -> None:
    """Memory per node: digits and an optional K, M, G or T (no unit: megabytes)."""
    if not _MEM.fullmatch(value):
        fixed = re.fullmatch(r"\s*([0-9]+)\s*([KMGTkmgt])i?[Bb]?\s*", value)
        example = f"--mem {fixed[1]}{fixed[2].upper()}" if fixed else "--mem 64G"
        raise ValueError(
            f"--mem {value!r} is not a SLURM memory size; write digits and one unit letter "
            f"K, M, G or T (no unit: megabytes; 0: all of the node's memory), e.g. {example}."
        )


def parse_gres(value: str) -> tuple[int, str | None]:
    """``gpu:G`` or ``gpu:TYPE:G`` -> (G, TYPE or None).

    Raises:
        ValueError: another resource or form, with the accepted ones.
    """
    match = _GRES.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"--gres {value!r}: mirrorfit slurm takes GPUs as gpu:G or gpu:TYPE:G (e.g. "
            "--gres gpu:2, --gres gpu:a100:4), and starts one task per GPU."
        )
    return int(match[2]), match[1]


def check_setup_line(line: str) -> None:
    """One ``--setup`` command: a single, non-empty line."""
    if not line.strip() or any(c in line for c in "\n\r\0"):
        raise ValueError(
            f"--setup {line!r} must be one non-empty shell command on one line; repeat "
            "--setup for each command (e.g. --setup 'module purge' --setup 'module load "
            "cuda/12.4'), or put several lines in a file and pass --prelude FILE."
        )


def read_prelude(path: str) -> str:
    """The shell lines of a ``--prelude`` file, without a leading ``#!`` line.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not text, or it holds ``#SBATCH`` lines (sbatch would ignore them
            there: they must come before the first command).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--prelude {path!r} does not exist (looked at {file.resolve()}); pass a file of "
            "shell commands to run before srun, e.g. module loads."
        )
    try:
        text = file.read_text()
    except (UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"--prelude {path!r} cannot be read as text: {exc}") from None
    lines = text.splitlines()
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    directives = [line for line in lines if line.lstrip().startswith("#SBATCH")]
    if "\0" in text or directives:
        what = f"holds {directives[0]!r}" if directives else "contains NUL bytes"
        raise ValueError(
            f"--prelude {path!r} {what}; the prelude is written after the #SBATCH lines, "
            "where sbatch ignores them: pass them as mirrorfit slurm flags or "
            "--sbatch-option KEY=VALUE."
        )
    return "\n".join(lines).strip("\n")


def parse_sbatch_options(items: Sequence[str]) -> dict[str, str | None]:
    """``["KEY=VALUE", "KEY", …]`` -> ``{"KEY": "VALUE", "KEY": None}`` (None: a flag).

    KEY is a long sbatch option without its dashes (``--comment`` -> ``comment``).

    Raises:
        ValueError: a bad name, an empty or unsafe value, a repeated key, or an
            option mirrorfit writes itself (the message names the flag to use).
    """
    options: dict[str, str | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not _OPTION_NAME.fullmatch(key):
            raise ValueError(
                f"--sbatch-option {item!r}: {key!r} is not a long sbatch option name; write "
                "KEY=VALUE with the name sbatch spells after '--', e.g. --sbatch-option "
                "comment=tensorflow, or KEY alone for a flag (--sbatch-option exclusive)."
            )
        if key in MANAGED_OPTIONS:
            raise ValueError(
                f"--sbatch-option {item!r}: mirrorfit writes --{key} itself; use "
                f"{MANAGED_OPTIONS[key]} instead."
            )
        if key in options:
            raise ValueError(f"--sbatch-option {key} is given twice; keep one.")
        if eq and not value:
            raise ValueError(
                f"--sbatch-option {item!r} has an empty value; give one, or write {key!r} "
                "alone for a flag."
            )
        if eq:
            _check_expression(f"--sbatch-option {key}=", value, "--sbatch-option comment=tf")
        options[key] = value if eq else None
    return options


def check_env(env: Mapping[str, str]) -> None:
    """Names of ``--env`` variables: letters, digits and ``_``."""
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
    check_env(env)
    return env


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
