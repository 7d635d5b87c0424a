"""A real one-node SLURM for the tests in this folder.

The session fixture ``slurm_cluster`` runs ``start_slurm.sh`` once (it installs
SLURM with apt-get when missing and root, then starts munged, slurmctld and
slurmd). The tests are skipped, with the script's reason, only when SLURM cannot
be brought up here (exit 3: not root, apt-get failed…); any other failure fails
them. Set ``MIRRORFIT_REQUIRE_SLURM=1`` (in CI) to turn that skip into a failure.

The fixture returns a :class:`SlurmCluster` whose helpers the tests share:
``submit`` (``mirrorfit slurm --submit …``), ``wait`` (until a job ends, with a
bounded timeout; returns a :class:`JobResult` with state, exit code, restarts and
the output file's text), ``job_info``, ``wait_for_state``, ``signal`` (USR1 as
before a time limit), ``make_eligible`` (a requeued job starts at once) and
``cancel``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

START_SCRIPT = Path(__file__).with_name("start_slurm.sh")
#: exit status of start_slurm.sh when SLURM cannot be installed or started here
CANNOT_START = 3
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


@dataclass(frozen=True)
class JobResult:
    """How a job ended, as ``scontrol show job`` reports it."""

    job_id: int
    state: str  # COMPLETED, FAILED, TIMEOUT…
    exit_code: int  # the batch script's exit status ("ExitCode=N:S" -> N)
    signal: int  # the signal that ended it ("ExitCode=N:S" -> S), 0 when none
    restarts: int  # times the job was requeued
    output: str  # the text of its StdOut file ("" when missing)
    info: dict[str, str]  # every field of ``scontrol show job -o``


def parse_job_line(line: str) -> dict[str, str]:
    """``scontrol show job -o`` output -> ``{"JobState": "RUNNING", …}``.

    Values may contain spaces (``Reason=…``): a token without ``=`` continues
    the previous value.
    """
    fields: dict[str, str] = {}
    key = None
    for token in line.split():
        name, eq, value = token.partition("=")
        if eq and name:
            key, fields[name] = name, value
        elif key is not None:
            fields[key] += " " + token
    return fields


class SlurmCluster:
    """Helpers to submit jobs to the local SLURM and watch them."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def submit(self, args: Sequence[str], cwd: Path) -> int:
        """Run ``mirrorfit slurm --submit *args`` in ``cwd``; the job id.

        The job's output file and batch script land in ``cwd``.
        """
        cmd = [self.python, "-m", "mirrorfit", "slurm", "--submit", *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{cmd} exited {proc.returncode}: {proc.stderr}"
        return int(proc.stdout.strip().splitlines()[-1])

    def job_info(self, job_id: int) -> dict[str, str]:
        """All fields of ``scontrol show job -o JOB_ID``."""
        proc = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return parse_job_line(proc.stdout)

    def wait_for_state(self, job_id: int, states: Iterable[str], timeout: float = 60) -> str:
        """Poll until the job's state is one of ``states``; that state.

        On timeout the job is cancelled and an AssertionError shows its fields.
        """
        wanted, info = set(states), {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") in wanted:
                return info["JobState"]
            time.sleep(0.5)
        self.cancel(job_id)
        raise AssertionError(
            f"job {job_id} not in {sorted(wanted)} after {timeout}s (cancelled it): {info}"
        )

    def wait(self, job_id: int, timeout: float = 90) -> JobResult:
        """Wait until the job ends (bounded); its state, exit code and output."""
        self.wait_for_state(job_id, TERMINAL_STATES, timeout)
        info = self.job_info(job_id)
        code, _, sig = info.get("ExitCode", "0:0").partition(":")
        stdout = Path(info.get("StdOut", ""))
        return JobResult(
            job_id=job_id,
            state=info["JobState"],
            exit_code=int(code),
            signal=int(sig or 0),
            restarts=int(info.get("Restarts", "0")),
            output=stdout.read_text() if stdout.is_file() else "",
            info=info,
        )

    def signal(self, job_id: int, signal: str = "USR1", batch: bool = True) -> None:
        """``scancel --signal=SIG [--batch] JOB_ID``: as SLURM does before the time limit
        (``--batch``: the batch shell only; else every task of every step)."""
        cmd = ["scancel", f"--signal={signal}", *(["--batch"] * batch), str(job_id)]
        subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)

    def make_eligible(self, job_id: int, settle_seconds: float = 2.0) -> None:
        """``scontrol update JobId=N StartTime=now``: start a requeued (PENDING) job
        without SLURM's hold (see /work/shared/slurm/README.md).

        Waits ``settle_seconds`` first: a requeue revokes the job's credential with
        one-second resolution, and a restart in that same second is killed
        ("Killing non-startable batch JobId=N: Job credential revoked", FAILED).
        """
        time.sleep(settle_seconds)
        subprocess.run(
            ["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    def cancel(self, job_id: int) -> None:
        """``scancel JOB_ID`` (ignores a job that already ended)."""
        subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30, check=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A running one-node SLURM (started once per session), or a skip with the reason."""
    try:
        proc = subprocess.run(
            ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=600
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{START_SCRIPT} did not finish in 600 s")
    if proc.returncode == CANNOT_START:
        lines = proc.stderr.strip().splitlines()
        reason = f"SLURM unavailable: {lines[-1] if lines else 'start_slurm.sh exited 3'}"
        if os.environ.get("MIRRORFIT_REQUIRE_SLURM") == "1":
            pytest.fail(f"{reason} (MIRRORFIT_REQUIRE_SLURM=1)")
        pytest.skip(reason)
    if proc.returncode != 0:
        pytest.fail(f"{START_SCRIPT} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return SlurmCluster()
