"""Workers started by SLURM's ``srun`` (one task per worker).

Reads what ``srun`` sets in each task: SLURM_PROCID (rank), SLURM_NTASKS (world
size), SLURM_LOCALID, SLURM_NODEID, SLURM_JOB_NODELIST, SLURM_NTASKS_PER_NODE or
SLURM_TASKS_PER_NODE, SLURM_JOB_ID and SLURM_RESTART_COUNT. The main address is
MASTER_ADDR when set, else the first host of the job's node list; the main port
is MASTER_PORT when set, else derived from the job id, so every task of a job
agrees on it without talking to the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from mirrorfit.cluster.environment import ClusterEnvironment, EnvironmentError_
from mirrorfit.cluster.hostlist import HostlistError, first_host

__all__ = ["SlurmEnvironment", "parse_tasks_per_node"]

#: job names of an interactive allocation (``salloc`` runs a shell named so)
_INTERACTIVE_JOB_NAMES = ("bash", "interactive")
_PORT_BASE, _PORT_SPAN = 15000, 20000
_TASKS_ITEM = re.compile(r"([0-9]+)(?:\(x([0-9]+)\))?")


def parse_tasks_per_node(value: str) -> list[int]:
    """Expand SLURM's compressed tasks-per-node list, one entry per node.

    Example:
        >>> parse_tasks_per_node("2(x3),1")
        [2, 2, 2, 1]

    Raises:
        EnvironmentError_: the text is not of the form ``N`` / ``N(xK)``, comma-separated.
    """
    counts: list[int] = []
    for item in value.split(","):
        match = _TASKS_ITEM.fullmatch(item.strip())
        if match is None:
            raise EnvironmentError_(
                f"slurm: cannot read tasks per node {value!r}; expected e.g. '4' or '2(x3),1'."
            )
        counts.extend([int(match[1])] * int(match[2] or 1))
    return counts


class SlurmEnvironment(ClusterEnvironment):
    """A task of an ``srun`` step inside a SLURM job.

    Example:
        >>> env = SlurmEnvironment({"SLURM_NTASKS": "8", "SLURM_PROCID": "5",
        ...     "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_JOB_ID": "4242",
        ...     "SLURM_JOB_NODELIST": "gpu[01-04]", "SLURM_STEP_ID": "0",
        ...     "SLURM_TASKS_PER_NODE": "2(x4)"})
        >>> env.rank, env.world_size, env.local_world_size, env.main_address, env.main_port
        (5, 8, 2, 'gpu01', 19242)
    """

    name = "slurm"

    @staticmethod
    def detect(environ: Mapping[str, str] | None = None) -> bool:
        """SLURM_NTASKS and SLURM_PROCID are set, and this is not the shell of an
        interactive allocation (job name ``bash`` or ``interactive``)."""
        env = os.environ if environ is None else environ
        if "SLURM_NTASKS" not in env or "SLURM_PROCID" not in env:
            return False
        return env.get("SLURM_JOB_NAME", "") not in _INTERACTIVE_JOB_NAMES

    @property
    def world_size(self) -> int:
        return self._int("SLURM_NTASKS")

    @property
    def rank(self) -> int:
        return self._int("SLURM_PROCID")

    @property
    def local_rank(self) -> int:
        return self._int("SLURM_LOCALID", 0)

    @property
    def node_rank(self) -> int:
        return self._int("SLURM_NODEID", 0)

    @property
    def num_nodes(self) -> int:
        """Nodes in the job (SLURM_NNODES / SLURM_JOB_NUM_NODES; 1 when unset)."""
        if self.environ.get("SLURM_NNODES"):
            return self._int("SLURM_NNODES")
        return self._int("SLURM_JOB_NUM_NODES", 1)

    @property
    def local_world_size(self) -> int:
        """Tasks on this node: SLURM_NTASKS_PER_NODE, else this node's entry of
        SLURM_TASKS_PER_NODE (``2(x3),1``), else world size / nodes."""
        if self.environ.get("SLURM_NTASKS_PER_NODE"):
            return self._int("SLURM_NTASKS_PER_NODE")
        per_node = self.environ.get("SLURM_TASKS_PER_NODE")
        if per_node:
            counts = parse_tasks_per_node(per_node)
            node = self.node_rank
            if not 0 <= node < len(counts):
                raise EnvironmentError_(
                    f"slurm: SLURM_NODEID={node} but SLURM_TASKS_PER_NODE={per_node!r} "
                    f"describes {len(counts)} node(s). Check the job's variables."
                )
            return counts[node]
        return max(1, self.world_size // max(1, self.num_nodes))

    @property
    def job_id(self) -> int | None:
        """SLURM_JOB_ID, or None outside a job."""
        return self._int("SLURM_JOB_ID") if self.environ.get("SLURM_JOB_ID") else None

    @property
    def job_name(self) -> str:
        """SLURM_JOB_NAME ('' when unset)."""
        return self.environ.get("SLURM_JOB_NAME", "")

    @property
    def main_address(self) -> str:
        """MASTER_ADDR, else the first host of SLURM_JOB_NODELIST (or SLURM_NODELIST)."""
        if self.environ.get("MASTER_ADDR"):
            return self.environ["MASTER_ADDR"]
        nodelist = self.environ.get("SLURM_JOB_NODELIST") or self.environ.get("SLURM_NODELIST")
        if not nodelist:
            raise EnvironmentError_(
                "slurm: neither MASTER_ADDR nor SLURM_JOB_NODELIST is set; "
                "start the workers with srun inside a job, or export MASTER_ADDR."
            )
        try:
            return first_host(nodelist)
        except HostlistError as exc:
            raise EnvironmentError_(f"slurm: SLURM_JOB_NODELIST: {exc}") from None

    @property
    def main_port(self) -> int:
        """MASTER_PORT, else ``15000 + SLURM_JOB_ID % 20000`` (same in every task)."""
        if self.environ.get("MASTER_PORT"):
            return self._int("MASTER_PORT")
        job_id = self.job_id
        if job_id is None:
            raise EnvironmentError_(
                "slurm: neither MASTER_PORT nor SLURM_JOB_ID is set, so no port can be "
                "derived; export MASTER_PORT or start the workers with srun inside a job."
            )
        return _PORT_BASE + job_id % _PORT_SPAN

    @property
    def restart_count(self) -> int:
        """SLURM_RESTART_COUNT: how many times the job was requeued (0 at first)."""
        return self._int("SLURM_RESTART_COUNT", 0)

    def validate(self) -> None:
        """Check rank, local id and node id against the sizes, and that the
        process is an srun task rather than the batch script itself.

        Raises:
            EnvironmentError_: the message names the variables and their values.
        """
        super().validate()
        node, nodes = self.node_rank, self.num_nodes
        if not 0 <= node < nodes:
            raise EnvironmentError_(
                f"slurm: SLURM_NODEID={node} but the job has {nodes} node(s) (SLURM_NNODES); "
                "the node id must be below it."
            )
        local, per_node = self.local_rank, self.local_world_size
        if not 0 <= local < per_node:
            raise EnvironmentError_(
                f"slurm: SLURM_LOCALID={local} but this node runs {per_node} task(s) "
                "(SLURM_NTASKS_PER_NODE / SLURM_TASKS_PER_NODE); the local id must be "
                "below it. Check the job's variables."
            )
        if self.world_size > 1 and "SLURM_STEP_ID" not in self.environ:
            raise EnvironmentError_(
                f"slurm: SLURM_NTASKS={self.world_size} but this process is the batch script, "
                "not an srun task (SLURM_STEP_ID is unset): start one worker per task with "
                "`srun python script.py` (`mirrorfit slurm` writes such a script)."
            )
        port = self.main_port
        if not 0 < port < 65536:
            raise EnvironmentError_(f"slurm: main port must be in 1..65535, received {port}.")
        self.main_address  # noqa: B018 - raises when no address can be found
