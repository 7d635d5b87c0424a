"""`mirrorfit slurm --submit` on a real one-node SLURM: 2 tasks join a gloo group.

One job checks, end to end: the batch script runs one worker per task; each
worker finds rank, world size, address and port through SlurmEnvironment; the
all-reduce sums over both ranks; OMP_NUM_THREADS and --env reach the workers;
hostile script arguments arrive verbatim and run nothing. (~10 s)
"""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

WORKER = textwrap.dedent(
    """
    import gc, json, os, sys
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from mirrorfit.cluster import detect_environment
    from mirrorfit.cluster.slurm import SlurmEnvironment

    env = detect_environment()
    assert isinstance(env, SlurmEnvironment), env
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{env.main_address}:{env.main_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=60),
    )
    total = torch.tensor([float(env.rank + 1)])
    dist.all_reduce(total)
    sys.stdout.write("RESULT " + json.dumps({
        "rank": env.rank, "world": env.world_size, "local": env.local_rank,
        "local_world": env.local_world_size, "node": env.node_rank,
        "restarts": env.restart_count, "port": env.main_port, "sum": total.item(),
        "omp": os.environ.get("OMP_NUM_THREADS"), "extra": os.environ.get("MF_EXTRA"),
        "argv": sys.argv[1:],
    }) + "\\n")  # one write: lines of two tasks never interleave
    sys.stdout.flush()
    # TORCH-NOTES trap 1: free tensors, sync, then destroy, or gloo may abort at exit
    del total
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _master_addr_args() -> list[str]:
    """The job's host name must resolve for gloo; fall back to loopback if not."""
    try:
        socket.gethostbyname(socket.gethostname().split(".")[0])
        return []
    except OSError:
        return ["--env", "MASTER_ADDR=127.0.0.1"]


def test_two_tasks_all_reduce_through_srun(slurm_cluster, tmp_path: Path) -> None:
    import json

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    pwned = tmp_path / "pwned"
    hostile = ["'; touch " + str(pwned) + " #", f"$(touch {pwned})", "a b\nc", ""]
    job_id = slurm_cluster.submit(
        [
            "--ntasks-per-node",
            "2",
            "--time",
            "5",
            "--job-name",
            "mf-allreduce",
            "--env",
            "MF_EXTRA=x y $HOME",
            *_master_addr_args(),
            "--script-file",
            str(tmp_path / "job.sbatch"),
            str(script),
            *hostile,
        ],
        cwd=tmp_path,
    )
    result = slurm_cluster.wait(job_id, timeout=120)

    assert (result.state, result.exit_code) == ("COMPLETED", 0), result.output
    rows = [
        json.loads(line[7:]) for line in result.output.splitlines() if line.startswith("RESULT ")
    ]
    assert sorted(row["rank"] for row in rows) == [0, 1], result.output
    for row in rows:
        assert row["sum"] == 3.0  # 1 + 2
        assert (row["world"], row["local_world"], row["node"]) == (2, 2, 0)
        assert row["local"] == row["rank"]
        assert row["restarts"] == 0
        assert row["port"] == 15000 + job_id % 20000
        assert row["omp"] == "1"
        assert row["extra"] == "x y $HOME"
        assert row["argv"] == hostile
    assert not pwned.exists()
    assert (tmp_path / "job.sbatch").read_text().startswith("#!/bin/bash\n")
    assert Path(result.info["StdOut"]) == tmp_path / f"mf-allreduce-{job_id}.out"


def test_a_failing_task_ends_the_job(slurm_cluster, tmp_path: Path) -> None:
    """--kill-on-bad-exit: rank 1 exits 3, so rank 0 (sleeping) is killed. (~3 s)"""
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['SLURM_PROCID'] == '1':\n"
        "    sys.exit(3)\n"
        "time.sleep(120)\n"
    )
    job_id = slurm_cluster.submit(
        ["--ntasks-per-node", "2", "--script-file", str(tmp_path / "job.sbatch"), str(script)],
        cwd=tmp_path,
    )
    result = slurm_cluster.wait(job_id, timeout=60)
    assert result.state == "FAILED" and result.exit_code != 0, result.info
    assert "task 1: Exited with exit code 3" in result.output, result.output


REQUEUE_WORKER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from mirrorfit.cluster.slurm import SlurmEnvironment

    env = SlurmEnvironment()
    env.validate()
    sys.stdout.write(f"START rank={env.rank} restart={env.restart_count}\\n"); sys.stdout.flush()
    if env.restart_count > 0:
        sys.exit(0)

    def on_usr1(signum, frame):
        if env.rank == 0:
            subprocess.run(["scontrol", "requeue", str(env.job_id)], check=True)
        sys.exit(0)

    signal.signal(signal.SIGUSR1, on_usr1)
    sys.stdout.write(f"READY rank={env.rank}\\n"); sys.stdout.flush()
    time.sleep(120)
    """
)


@pytest.mark.slow  # test_training_real.py requeues a training job the same way
def test_usr1_requeue_restarts_with_restart_count(slurm_cluster, tmp_path: Path) -> None:
    """The script's --requeue/--open-mode=append plumbing: USR1 to the tasks (as
    --signal=USR1@S sends before the limit), rank 0 requeues, the job comes back
    with SLURM_RESTART_COUNT=1 and appends to the same output file. (~5 s)"""
    script = tmp_path / "requeue.py"
    script.write_text(REQUEUE_WORKER)
    job_id = slurm_cluster.submit(
        ["--ntasks-per-node", "2", "--script-file", str(tmp_path / "job.sbatch"), str(script)],
        cwd=tmp_path,
    )
    out = tmp_path / f"requeue-{job_id}.out"
    deadline = time.monotonic() + 60
    while not (out.is_file() and out.read_text().count("READY") == 2):
        assert time.monotonic() < deadline, f"workers never ready: {slurm_cluster.job_info(job_id)}"
        time.sleep(0.2)
    slurm_cluster.signal(job_id, "USR1", batch=False)
    slurm_cluster.wait_for_state(job_id, {"PENDING"}, timeout=60)
    slurm_cluster.make_eligible(job_id)
    result = slurm_cluster.wait(job_id, timeout=60)

    assert (result.state, result.exit_code, result.restarts) == ("COMPLETED", 0, 1), result.info
    for rank in (0, 1):
        assert f"START rank={rank} restart=0" in result.output, result.output
        assert f"START rank={rank} restart=1" in result.output, result.output
