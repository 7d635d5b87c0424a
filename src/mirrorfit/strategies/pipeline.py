"""Pipeline parallelism on ``torch.distributed.pipelining``: one stage per worker.

An ``nn.Sequential`` is cut between its children (or, at split points named by a
nested path, inside its ``nn.Sequential`` children) into ``stages`` parts
(``strategies.pipeline_split``); worker ``rank % stages`` keeps its part and frees
the others' layers (they stay in the module as meta tensors). Each step splits the
replica's share of the global batch into ``microbatches`` equal chunks that flow
through the stages under torch's ``ScheduleGPipe`` or ``Schedule1F1B``; the last
stage computes the loss per chunk. The chunk losses are scaled by ``1/chunks`` (and
the data-parallel loss scale), so the accumulated gradient is the gradient of the
mean over the global batch, as on one device.

With ``replicas > 1`` the world is a 2-D mesh ``(dp, pp)``: rank ``d * stages + s``
is stage ``s`` of replica ``d``; each replica reads its share of the global batch and
the stages' gradients are averaged over the ``dp`` axis before each update.

Metrics, ``evaluate`` and ``predict`` use the last stage's outputs: the loss and
metric states are zero on the other stages, so the usual one all-reduce gives the
exact global values on every rank; predictions are sent from the last stage to
the others of its replica.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from mirrorfit import optimizers as optimizers_mod
from mirrorfit import precision as precision_mod
from mirrorfit.checkpoint import sharded as sharded_io
from mirrorfit.cluster import detect_environment
from mirrorfit.strategies import pipeline_checkpoint as folders
from mirrorfit.strategies import pipeline_schedule as flow
from mirrorfit.strategies import pipeline_split
from mirrorfit.strategies import pipeline_state as states
from mirrorfit.strategies.capabilities import ShardedState
from mirrorfit.strategies.setup import Clipping, Setup, StepInputs
from mirrorfit.strategies.workers import WorkerStrategy


@dataclass
class _Stage:
    """What the strategy keeps per compiled model (``setup.private["pipeline"]``)."""

    index: int
    bounds: list[tuple[int, int]]  # each stage's range of the cut's units
    owned: frozenset[str]  # state_dict keys of this stage's children
    group_names: list[list[str]]  # the optimizer's groups over the whole model, by name
    param_names: dict[int, str]  # id(parameter) -> name, this stage's parameters
    schedules: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    full_batch: int | None = None  # the largest training share so far


class PipelineStrategy(WorkerStrategy, ShardedState):
    """A model cut into stages, one per worker process, fed micro-batch by micro-batch.

    Started like :class:`~mirrorfit.MirroredStrategy` (``python train.py`` starts
    ``stages * replicas`` workers; torchrun, SLURM and ``mirrorfit run`` are joined).

    Args:
        stages: how many stages (worker processes per replica).
        microbatches: chunks each replica's share of a batch is split into; the batch
            size must be divisible by ``microbatches * replicas``. A smaller last batch
            uses the largest divisor of its size not above ``microbatches``.
        schedule: ``"gpipe"`` (all forwards, then all backwards) or ``"1f1b"`` (one
            forward one backward, less activation memory; needs ``microbatches >= stages``).
        split_points: module paths of the modules that start stages 2, 3, ...: children
            of the ``nn.Sequential`` (``"3"``, ``"decoder"``) or modules inside its
            ``nn.Sequential`` children, at any depth (``"blocks.3"`` also cuts
            ``blocks`` in two); None cuts the root's children where the stages'
            parameter counts are most even.
        replicas: data-parallel copies of the pipeline (a 2-D mesh ``(dp, pp)``).
        port, timeout, num_threads, max_restarts: as for ``MirroredStrategy``.
        precision: ``"bf16-mixed"``, ``"16-mixed"`` or ``"32"`` (Keras's names too); None
            follows ``mirrorfit.mixed_precision.global_policy()``.

    Raises:
        ValueError: bad ``stages``, ``microbatches``, ``schedule``, ``replicas`` or
            ``split_points`` (at construction); a world that is not a multiple of
            ``stages``; at ``compile``, a module that cannot be cut so (on every worker,
            before anything is moved); at ``fit``, a batch size that does not divide.

    Example:
        >>> import mirrorfit
        >>> strategy = mirrorfit.PipelineStrategy(stages=2, microbatches=4)  # doctest: +SKIP
        >>> with strategy.scope():                                           # doctest: +SKIP
        ...     model = mirrorfit.Model(nn.Sequential(nn.Linear(8, 32), nn.ReLU(),
        ...                                           nn.Linear(32, 2)))
        ...     model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
        >>> model.fit(x, y, batch_size=64, epochs=2)                         # doctest: +SKIP
    """

    def __init__(self, stages: int = 2, microbatches: int = 4, schedule: str = "gpipe",
                 split_points: pipeline_split.SplitPoints = None, *, replicas: int = 1,
                 port: int | None = None, timeout: float | None = None,
                 num_threads: int | None = None, max_restarts: int = 0,
                 precision: str | None = None) -> None:
        for name, value in (("stages", stages), ("microbatches", microbatches),
                            ("replicas", replicas)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PipelineStrategy({name}={value!r}): expected an integer >= 1.")
        if schedule not in flow.SCHEDULES:
            raise ValueError(f"PipelineStrategy(schedule={schedule!r}): expected one of "
                             f"{sorted(flow.SCHEDULES)}.")
        if schedule == "1f1b" and microbatches < stages:
            raise ValueError(f"PipelineStrategy(schedule='1f1b') needs microbatches >= stages; "
                             f"received microbatches={microbatches}, stages={stages}. Raise "
                             "microbatches, or use schedule='gpipe'.")
        self.stages, self.microbatches, self.schedule = stages, microbatches, schedule
        self.split_points = pipeline_split.check_split_points(split_points)
        self._mesh: DeviceMesh | None = None
        self._owned: dict[int, frozenset[str]] = {}  # id(module) -> this stage's keys
        self._pipes: list[_Stage] = []  # every model set up here, newest last
        self._current: tuple[StepInputs, float, list[torch.Tensor], Any] | None = None
        # started here: stages x replicas workers; under torchrun, SLURM or `mirrorfit run`
        # the launcher's world decides (checked against the stages in _place)
        workers = stages * replicas if detect_environment().name == "local" else None
        super().__init__(workers, port=port, timeout=timeout, num_threads=num_threads,
                         max_restarts=max_restarts, precision=precision)
        if self._pending_launch is None:
            self._place()

    def _place(self) -> None:
        """The data-parallel coordinate: replica ``rank // stages``.

        Raises:
            ValueError: a world that is not a multiple of ``stages``.
        """
        if self._world % self.stages or (self._world == 1 and self.stages > 1):
            raise ValueError(f"PipelineStrategy(stages={self.stages}) needs a world of a multiple "
                             f"of {self.stages} workers; this job has {self._world}. Start "
                             f"stages x replicas workers, or change stages.")
        self._dp_rank, self._dp_world = self._rank // self.stages, self._world // self.stages

    @property
    def stage(self) -> int:
        """This worker's stage (0 is fed the inputs, ``stages - 1`` computes the loss)."""
        return self._rank % self.stages

    @property
    def mesh(self) -> DeviceMesh:
        """The ``(dp, pp)`` device mesh (built on first use)."""
        if self._mesh is None:
            self._mesh = init_device_mesh(self._device.type, (self._world // self.stages,
                                                              self.stages),
                                          mesh_dim_names=("dp", "pp"))
            self.dp_group = self._mesh.get_group("dp") if self._dp_world != 1 else None
        return self._mesh

    # --- modules ------------------------------------------------------------------------
    def setup(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
              precision: str = "float32", clipping: Clipping | None = None,
              jit_compile: bool = False) -> Setup:
        """Keep this worker's stage of ``module`` (the others' layers become meta tensors)
        and point ``optimizer`` at the stage's parameters.

        Raises:
            ValueError: a module that cannot be cut (see ``pipeline_split``),
                ``jit_compile`` (not supported), float16 with a stage without parameters.
        """
        self._check_started()
        policy = precision_mod.canonical_name(self.precision_policy or precision)
        _check_supported(jit_compile)
        cut = pipeline_split.cut(module, self.stages, self.split_points)  # raises first
        before = {id(p): name for name, p in module.named_parameters()}
        group_names = [[before[id(p)] for p in g["params"]] for g in optimizer.param_groups]
        index = self.stage
        mine = cut.stage_units(index)
        for path in cut.units:
            if path not in mine:  # another stage's: keep names and shapes, free the memory
                module.get_submodule(path).to("meta")
        assert isinstance(module, nn.Sequential)  # cut() raised otherwise
        stage = pipeline_split.stage_module(module, mine).to(self._device)
        optimizers_mod.rebind(optimizer, before, dict(stage.named_parameters()))
        owned = frozenset(stage.state_dict())
        if precision_mod.POLICIES[policy] is torch.float16 and next(stage.parameters(), None) \
                is None and self.stages > 1:
            # every stage must take part in the agreement on a skipped float16 step
            raise ValueError(f"Stage {index} ({list(stage._modules)}) holds no parameters; under "
                             f"{policy!r} every stage needs some. Move the split points.")
        self._owned[id(module)] = owned
        setup = Setup(module, stage, stage, optimizer,
                      precision_mod.resolve(policy, self._device), clipping or Clipping())
        pipe = _Stage(index, cut.bounds, owned, group_names,
                      {id(p): n for n, p in stage.named_parameters()})
        setup.private["pipeline"] = pipe
        self._pipes.append(pipe)
        if self.stages > 1:
            _ = self.mesh  # collective: every worker builds the mesh at compile
        return setup

    def _pipe(self, setup: Setup) -> _Stage:
        pipe: _Stage = setup.private["pipeline"]
        return pipe

    def _scheduler(self, setup: Setup, x: torch.Tensor, train: bool) -> tuple[Any, int]:
        """The schedule for a share ``x``, and its chunk count: one per input shape and
        type (torch's stages infer the shapes they exchange on their first step, so a
        new sequence length needs a new stage too)."""
        pipe = self._pipe(setup)
        n_chunks = flow.chunks(int(x.shape[0]), self.microbatches)
        key = (tuple(x.shape), x.dtype, n_chunks, train)
        if key not in pipe.schedules:
            pipe.schedules[key] = flow.build(setup.placed, pipe.index, self.stages, self._device,
                                             self.mesh.get_group("pp"), n_chunks, self.schedule,
                                             self._chunk_loss if train else None)
        return pipe.schedules[key], n_chunks

    def _chunk_loss(self, output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One chunk's loss on the last stage; ``index`` picks the chunk's targets."""
        assert self._current is not None
        inputs, factor, losses, scaler = self._current
        sw = inputs.sw[index] if inputs.sw is not None else None
        loss = inputs.loss(output, flow.take(inputs.y, index), sw)
        losses.append(loss.detach())
        # float16: the GradScaler's scale, as precision.backward applies it on one device
        return loss * factor if scaler is None else scaler.scale(loss * factor)

    # --- one step -------------------------------------------------------------------------
    def forward_backward(self, setup: Setup, inputs: StepInputs,
                         scale: float) -> tuple[torch.Tensor | None, Any]:
        """Run the share through the schedule (forward and backward of every chunk).

        Returns:
            The share's mean loss and output on the last stage; None, None elsewhere.

        Raises:
            ValueError: the first batch's share does not split into ``microbatches``.
        """
        if self.stages == 1:
            return super().forward_backward(setup, inputs, scale)
        n = flow.batch_size(inputs.x)
        pipe = self._pipe(setup)
        flow.check_share(n, pipe.full_batch or 0, self.microbatches, self.num_replicas_in_sync)
        pipe.full_batch = max(pipe.full_batch or 0, n)
        schedule, chunks = self._scheduler(setup, inputs.x, train=True)
        losses: list[torch.Tensor] = []
        scaler = getattr(setup.precision, "scaler", None)
        if scaler is not None and self.stage != self.stages - 1:
            # GradScaler starts its scale on the first scale() call, which only the last
            # stage makes (it has the loss); unscale_ refuses a scaler that never scaled
            scaler.scale(torch.zeros((), device=self._device))
        self._current = (inputs, scale / chunks, losses, scaler)
        try:
            # autocast around the whole schedule: each stage's forward runs in the
            # policy's type (bfloat16), as the same layers would on one device
            with setup.precision.forward_context():
                out = flow.run(schedule, self.stage, self.stages, inputs.x,
                               torch.arange(n, device=self._device))
        finally:
            self._current = None
        if self.stage != self.stages - 1:
            return None, None
        # the last `chunks` losses: a schedule's first step also calls the loss while it
        # initializes the stage (on an empty output, NaN), before the real chunks
        return torch.stack(losses[-chunks:]).mean(), out.detach()

    def forward(self, setup: Setup, inputs: StepInputs) -> tuple[torch.Tensor | None, Any]:
        """Evaluation's forward through the stages (GPipe, no gradients). The loss and
        output on the last stage; prediction's output (no targets) on every stage."""
        if self.stages == 1:
            return super().forward(setup, inputs)
        flow.batch_size(inputs.x)  # one tensor, or a TypeError that says so
        schedule, _ = self._scheduler(setup, inputs.x, train=False)
        with setup.precision.forward_context():
            out = flow.run(schedule, self.stage, self.stages, inputs.x, None)
        last = self.stage == self.stages - 1
        if inputs.y is None:  # predict: every rank returns the outputs
            box = [out.detach().cpu() if last else None]
            src = self._rank - self.stage + self.stages - 1
            dist.broadcast_object_list(box, src=src, group=self.mesh.get_group("pp"))
            received = box[0]
            assert isinstance(received, torch.Tensor)
            return None, received.to(self._device)
        if not last:
            return None, None
        with setup.precision.forward_context():
            return inputs.loss(out, inputs.y, inputs.sw), out

    def optimizer_step(self, setup: Setup) -> bool:
        """Average each stage's gradients over its replicas (the ``dp`` axis), then step."""
        if self._dp_world not in (None, 1):
            states.average_over(_grads(setup), self.mesh.get_group("dp"),
                                self.num_replicas_in_sync)
        return super().optimizer_step(setup)

    def agree_found_inf(self, flag: torch.Tensor) -> None:
        """Each stage checks its own gradients for inf/NaN: the maximum over all ranks."""
        if self.distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)

    def clip_gradients(self, setup: Setup) -> None:
        """Keras's clipping; ``global_clipnorm`` takes the norm over every stage's
        gradients (one all-reduce over the pp axis), as on one device."""
        clip = setup.clipping
        if clip.global_clipnorm is None or self.stages == 1:
            super().clip_gradients(setup)
            return
        states.clip_global_norm(_grads(setup), clip.global_clipnorm, self.mesh.get_group("pp"))
        if clip.clipvalue is not None:  # clip_grad_value_ takes the parameters
            params = [p for g in setup.optimizer.param_groups for p in g["params"]]
            nn.utils.clip_grad_value_(params, clip.clipvalue, foreach=True)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` over the replicas (every stage of a replica holds the
        same predictions), in replica order."""
        if self._dp_world in (None, 1) or not self.distributed:
            return tensor
        parts: list[Any] = [None] * self.num_replicas_in_sync
        dist.all_gather_object(parts, tensor.detach().cpu(), group=self.mesh.get_group("dp"))
        return torch.cat(parts).to(tensor.device)

    # --- training state ------------------------------------------------------------------
    def module_state(self, setup: Setup) -> dict[str, Any]:
        """The whole module's state dict: this stage's tensors, the others' as meta."""
        return setup.module.state_dict()

    def load_module_state(self, setup: Setup, state: dict[str, Any]) -> None:
        states.load_owned(setup.module, state, self._pipe(setup).owned)

    def optimizer_state(self, setup: Setup) -> dict[str, Any]:
        """This stage's optimizer state keyed by parameter name (an optimizer that never
        stepped gets zero state first, as ShardedStrategy's, so a checkpoint loads)."""
        return states.named_optimizer_state(setup.optimizer, self._pipe(setup).param_names)

    def load_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        pipe = self._pipe(setup)
        setup.optimizer.load_state_dict(states.owned_only(state, pipe.owned, pipe.group_names))

    def full_optimizer_state(self, setup: Setup) -> dict[str, Any]:
        """The whole model's optimizer state keyed by index, on every rank (collective)."""
        named = self.optimizer_state(setup)
        parts = self.all_gather_object(states.to_cpu(named["state"]))
        return states.indexed_whole(parts, named["param_groups"], self._pipe(setup).group_names)

    def load_full_optimizer_state(self, setup: Setup, state: dict[str, Any]) -> None:
        self.load_optimizer_state(setup, state)

    def full_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Whole tensors on every rank, gathered from the stages (collective once set up)."""
        owned = self._owned.get(id(module))
        if owned is None or not self.distributed:
            return module.state_dict()
        local = {k: v.detach().cpu() for k, v in module.state_dict().items() if k in owned}
        merged: dict[str, torch.Tensor] = {}
        for part in self.all_gather_object(local):
            merged.update(part)
        return {k: merged[k].to(self._device) for k in module.state_dict()}

    def load_full_state_dict(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        owned = self._owned.get(id(module))
        if owned is None:
            module.load_state_dict(state)
        else:
            states.load_owned(module, state, owned)

    def save_sharded(self, state: dict[str, Any], path: str | os.PathLike[str],
                     kind: str = "backup") -> None:
        """Every stage writes its tensors into one DCP folder, with the stage count."""
        sharded, _ = sharded_io.split(state)
        folders.save(state, path, kind, self.stages, self._group_names(sharded))

    def load_sharded(self, template: dict[str, Any], path: str | os.PathLike[str],
                     kinds: Collection[str] = ("backup",)) -> dict[str, Any]:
        """``template`` filled from this stage's part of the folder at ``path``.

        Raises:
            IncompatibleCheckpointError: a checkpoint of another stage count.
            MismatchedCheckpointError: another architecture (nothing is loaded).
        """
        sharded, _ = sharded_io.split(template)
        return folders.load(template, path, kinds, self._device, self.stages,
                            self._group_names(sharded))

    def _group_names(self, sharded: dict[str, Any]) -> list[list[str]]:
        """The optimizer groups (whole-model names) of the model whose state ``sharded`` is."""
        return states.group_names_of(sharded, [(p.owned, p.group_names) for p in self._pipes])

    def __repr__(self) -> str:
        return (f"PipelineStrategy(stages={self.stages}, replicas={self.num_replicas_in_sync}, "
                f"microbatches={self.microbatches}, schedule={self.schedule!r}, "
                f"rank={self._rank}, device={self._device})")


def _check_supported(jit_compile: bool) -> None:
    if jit_compile:
        raise ValueError("PipelineStrategy does not support jit_compile=True yet (torch.compile "
                         "of a stage); compile without it.")


def _grads(setup: Setup) -> list[torch.Tensor]:
    return [p.grad for g in setup.optimizer.param_groups for p in g["params"]
            if p.grad is not None]
