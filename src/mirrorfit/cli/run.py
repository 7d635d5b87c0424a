"""``mirrorfit run``: start a script's workers on this host (or one node of many)
under torch elastic's agent, like torchrun, with mirrorfit's defaults: a free
loopback port, one thread per CPU worker, one clear error when a worker fails.

    mirrorfit run -n 2 train.py --epochs 3
    mirrorfit run -n 2 --nnodes 2 --node-rank 0 --master node0:29400 train.py   # on node 0
    mirrorfit run -n 2 --nnodes 2 --node-rank 1 --master node0:29400 train.py   # on node 1
"""

from __future__ import annotations

import argparse
import os

from mirrorfit.cluster.launcher import LaunchSpec, PortInUseError, launch
from mirrorfit.cluster.threads import threads_per_worker
from mirrorfit.devices import list_devices


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="start a script's workers (a front over torch elastic)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--nproc-per-node", type=int, default=None,
                   help="workers on this node (default: one per GPU, else 1)")
    p.add_argument("--nnodes", type=int, default=1, help="nodes in the job (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank (0..nnodes-1)")
    p.add_argument("--master", default=None, metavar="HOST:PORT",
                   help="the address node 0 listens on; needed with --nnodes > 1")
    p.add_argument("--port", type=int, default=None,
                   help="single node: the rendezvous port (default: a free one)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart all workers this many times when one fails")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per CPU worker (default: cores // workers)")
    p.add_argument("script", help="the Python script to run")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.script):
        raise FileNotFoundError(f"script {args.script!r} does not exist; pass the path of a "
                                "Python file.")
    gpus = [d for d in list_devices() if d.startswith("cuda")]
    nprocs = args.nproc_per_node or max(1, len(gpus))
    if args.nnodes > 1 and args.port is not None:
        raise ValueError("--port is for one node; several nodes use --master HOST:PORT.")
    spec = LaunchSpec(nprocs=nprocs, nnodes=args.nnodes, node_rank=args.node_rank,
                      master=args.master, port=args.port, max_restarts=args.max_restarts,
                      num_threads=args.threads or threads_per_worker(nprocs))
    try:
        return launch(spec, [args.script, *args.args])
    except PortInUseError as exc:
        raise ValueError(f"{str(exc).split(';')[0]}; name another port in --master HOST:PORT "
                         "(or --port), or leave --port out on one node for a free one.") from None
