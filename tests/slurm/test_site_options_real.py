"""A job written as HPC sites need it, on the real one-node SLURM: a ``--prelude``
and ``--setup`` commands (a stand-in ``module`` function, an export that uses the
job's own variables) run before ``srun``; ``--cpus-per-task 2`` reaches SLURM,
srun and the workers; ``--account``, ``--mem``, ``--error`` and a generic
``--sbatch-option`` are accepted by sbatch and show in ``scontrol show job``; the
2 tasks still form a gloo group. (~15 s)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.slurm.test_sbatch_real import WORKER, _master_addr_args

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

SITE_WORKER = WORKER.replace(
    '"omp": os.environ.get("OMP_NUM_THREADS"),',
    '"omp": os.environ.get("OMP_NUM_THREADS"), '
    '"cpus": os.environ.get("SLURM_CPUS_PER_TASK"), '
    '"prelude": os.environ.get("MF_PRELUDE"), "modules": os.environ.get("MF_MODULES"),',
)

# a site's `module` command, reduced to recording what was loaded
PRELUDE = """#!/bin/bash
module() { export MF_MODULES="${MF_MODULES:-}${MF_MODULES:+;}$*"; echo "module $*" >&2; }
export MF_PRELUDE=yes
"""


def test_setup_cpus_and_site_options_reach_the_job(slurm_cluster, tmp_path: Path) -> None:
    assert "cpus" in SITE_WORKER  # the replacement above found its anchor
    script = tmp_path / "worker.py"
    script.write_text(SITE_WORKER)
    prelude = tmp_path / "site.sh"
    prelude.write_text(PRELUDE)
    job_id = slurm_cluster.submit(
        [
            "--ntasks-per-node", "2",
            "--cpus-per-task", "2",
            "--time", "5",
            "--job-name", "mf-site",
            "--prelude", str(prelude),
            "--setup", "module purge",
            "--setup", "module load gcc/12 cuda/12.4",
            "--setup", 'export MF_EXTRA="job $SLURM_JOB_ID"',
            "--account", "proj-42",
            "--mem", "1M",
            "--error", "%x-%j.err",
            "--sbatch-option", "comment=mirrorfit-site-test",
            *_master_addr_args(),
            "--script-file", str(tmp_path / "job.sbatch"),
            str(script),
        ],
        cwd=tmp_path,
    )
    result = slurm_cluster.wait(job_id, timeout=120)
    errors = tmp_path / f"mf-site-{job_id}.err"
    err_text = errors.read_text() if errors.is_file() else ""

    assert (result.state, result.exit_code) == ("COMPLETED", 0), result.output + err_text
    info = result.info
    assert (info["Account"], info["Comment"]) == ("proj-42", "mirrorfit-site-test"), info
    assert info["MinMemoryNode"] == "1M" and info["NumCPUs"] == "4", info
    assert Path(info["StdErr"]) == errors
    assert "module purge\nmodule load gcc/12 cuda/12.4\n" in err_text

    rows = [json.loads(line[7:]) for line in result.output.splitlines()
            if line.startswith("RESULT ")]
    assert sorted(row["rank"] for row in rows) == [0, 1], result.output + err_text
    for row in rows:
        assert row["sum"] == 3.0  # the gloo group formed
        assert (row["omp"], row["cpus"]) == ("2", "2")
        assert row["prelude"] == "yes"
        assert row["modules"] == "purge;load gcc/12 cuda/12.4"
        assert row["extra"] == f"job {job_id}"
