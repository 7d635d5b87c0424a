"""Run real worker processes from tests: a script file, a clean environment, an
outer timeout so a hang fails the test instead of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_STRIP = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
          "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
          "MIRRORFIT_LAUNCHED", "MIRRORFIT_STORE", "MIRRORFIT_DEVICES", "SLURM_PROCID",
          "SLURM_NTASKS", "SLURM_JOB_ID", "OMP_NUM_THREADS", "MIRRORFIT_NUM_THREADS")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json_lines(self) -> list[dict]:
        """Lines of stdout that start with ``JSON `` parsed as JSON."""
        return [json.loads(line[5:]) for line in self.stdout.splitlines()
                if line.startswith("JSON ")]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_python(script: str | Path, *args: str, timeout: float = 120, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> Result:
    """Run ``python script args`` and return its outcome; a timeout fails loudly."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env or clean_env())
    return Result(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start)


def write_script(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path
