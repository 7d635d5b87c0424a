"""SlurmEnvironment from filled dicts (no real cluster)."""

from __future__ import annotations

import pytest

from mirrorfit.cluster import TorchElasticEnvironment, detect_environment
from mirrorfit.cluster.environment import EnvironmentError_
from mirrorfit.cluster.local import LocalEnvironment
from mirrorfit.cluster.slurm import SlurmEnvironment, parse_tasks_per_node


def srun_task(**overrides: str) -> dict[str, str]:
    """What srun sets in task 5 of 8 (4 nodes x 2 tasks), plus overrides."""
    env = {
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "2",
        "SLURM_NNODES": "4",
        "SLURM_JOB_NODELIST": "gpu[01-03,07]",
        "SLURM_TASKS_PER_NODE": "2(x4)",
        "SLURM_STEP_ID": "0",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v != "<unset>"}


def test_multi_node_task() -> None:
    env = SlurmEnvironment(srun_task())
    env.validate()
    assert (env.rank, env.world_size, env.local_rank, env.node_rank) == (5, 8, 1, 2)
    assert (env.local_world_size, env.num_nodes, env.restart_count) == (2, 4, 0)
    assert env.main_address == "gpu01"
    assert env.main_port == 15000 + 123456 % 20000 == 18456
    assert (env.job_id, env.job_name) == (123456, "train")
    assert "rank=5" in repr(env)


def test_single_node_task() -> None:
    environ = {
        "SLURM_JOB_ID": "7",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_JOB_NODELIST": "vm",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_STEP_ID": "0",
        "SLURM_JOB_NAME": "job.sbatch",
    }
    env = SlurmEnvironment(environ)
    env.validate()
    assert (env.main_address, env.main_port, env.local_world_size, env.num_nodes) == (
        "vm",
        15007,
        2,
        1,
    )


def test_master_addr_port_and_restart_count_win() -> None:
    env = SlurmEnvironment(
        srun_task(MASTER_ADDR="10.0.0.9", MASTER_PORT="29500", SLURM_RESTART_COUNT="2")
    )
    assert (env.main_address, env.main_port, env.restart_count) == ("10.0.0.9", 29500, 2)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"SLURM_NTASKS_PER_NODE": "3", "SLURM_TASKS_PER_NODE": "2(x4)"}, 3),
        ({"SLURM_TASKS_PER_NODE": "2(x2),1,3", "SLURM_NODEID": "3", "SLURM_LOCALID": "0"}, 3),
        ({"SLURM_TASKS_PER_NODE": "<unset>"}, 2),  # 8 tasks / 4 nodes
        (
            {
                "SLURM_TASKS_PER_NODE": "<unset>",
                "SLURM_NNODES": "<unset>",
                "SLURM_JOB_NUM_NODES": "2",
                "SLURM_NODEID": "1",
            },
            4,
        ),
    ],
)
def test_local_world_size(overrides: dict[str, str], expected: int) -> None:
    assert SlurmEnvironment(srun_task(**overrides)).local_world_size == expected


def test_parse_tasks_per_node() -> None:
    assert parse_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert parse_tasks_per_node("4") == [4]
    with pytest.raises(EnvironmentError_, match=r"'2\(3\)'"):
        parse_tasks_per_node("2(3)")


@pytest.mark.parametrize(
    ("environ", "detected"),
    [
        (srun_task(), True),
        (srun_task(SLURM_JOB_NAME="bash"), False),  # salloc's interactive shell
        (srun_task(SLURM_JOB_NAME="interactive"), False),
        (srun_task(SLURM_PROCID="<unset>"), False),
        (srun_task(SLURM_NTASKS="<unset>"), False),
        ({}, False),
    ],
)
def test_detect(environ: dict[str, str], detected: bool) -> None:
    assert SlurmEnvironment.detect(environ) is detected


def test_detect_environment_picks_slurm_but_torchelastic_wins() -> None:
    assert isinstance(detect_environment(srun_task()), SlurmEnvironment)
    torchrun = {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert isinstance(detect_environment({**srun_task(), **torchrun}), TorchElasticEnvironment)
    assert isinstance(detect_environment(srun_task(SLURM_JOB_NAME="bash")), LocalEnvironment)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SLURM_PROCID": "8"}, r"rank=8, world size=8"),
        ({"SLURM_NTASKS": "0"}, r"world size must be >= 1"),
        ({"SLURM_LOCALID": "2"}, r"SLURM_LOCALID=2 but this node runs 2 task"),
        ({"SLURM_NTASKS_PER_NODE": "1"}, r"SLURM_LOCALID=1 but this node runs 1 task"),
        ({"SLURM_NODEID": "4"}, r"SLURM_NODEID=4 but the job has 4 node"),
        (
            {"SLURM_NODEID": "4", "SLURM_NNODES": "5"},
            r"SLURM_NODEID=4 but SLURM_TASKS_PER_NODE='2\(x4\)' describes 4 node",
        ),
        ({"SLURM_STEP_ID": "<unset>"}, r"batch script, not an srun task"),
        ({"SLURM_PROCID": "x"}, r"SLURM_PROCID must be an integer, received 'x'"),
        ({"SLURM_TASKS_PER_NODE": "two"}, r"cannot read tasks per node 'two'"),
        ({"SLURM_JOB_NODELIST": "gpu[1-"}, r"SLURM_JOB_NODELIST: invalid SLURM host list"),
        ({"SLURM_JOB_NODELIST": "<unset>"}, r"neither MASTER_ADDR nor SLURM_JOB_NODELIST"),
        ({"SLURM_JOB_ID": "<unset>"}, r"neither MASTER_PORT nor SLURM_JOB_ID"),
        ({"MASTER_PORT": "70000"}, r"main port must be in 1..65535, received 70000"),
    ],
)
def test_validate_names_the_bad_values(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(EnvironmentError_, match=message):
        SlurmEnvironment(srun_task(**overrides)).validate()


def test_batch_script_with_one_task_is_fine() -> None:
    """A 1-task job may run the worker straight from the batch script."""
    SlurmEnvironment(
        srun_task(
            SLURM_NTASKS="1",
            SLURM_PROCID="0",
            SLURM_LOCALID="0",
            SLURM_NODEID="0",
            SLURM_NNODES="1",
            SLURM_TASKS_PER_NODE="1",
            SLURM_STEP_ID="<unset>",
        )
    ).validate()
