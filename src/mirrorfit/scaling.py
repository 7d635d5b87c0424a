"""Batch size and learning rate when the replica count changes.

``batch_size`` in ``fit`` is the **global** batch. Keep the per-replica batch
and grow the global one with the replicas (the Keras guide's
``batch_size = 64 * strategy.num_replicas_in_sync``): each replica stays as
busy as one device alone, but the model takes fewer, larger steps per epoch, so
the learning rate usually grows too, with a short warmup:

    >>> import mirrorfit
    >>> from mirrorfit.scaling import scaled_learning_rate
    >>> replicas = 4                      # strategy.num_replicas_in_sync
    >>> batch_size = 64 * replicas        # global batch: 64 per replica
    >>> scaled_learning_rate(1e-3, batch_size, base_batch=64)            # linear rule
    0.004
    >>> round(scaled_learning_rate(1e-3, batch_size, 64, rule="sqrt"), 6)
    0.002

Then ``callbacks=[mirrorfit.callbacks.LearningRateWarmup(lr, warmup_steps=...)]`` in ``fit`` (or
:func:`warmup_schedule` in your own loop) ramps the rate up from the base one.

- **linear** (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): lr × k for a
  k-times larger batch; for SGD, with ~5 epochs of warmup.
- **sqrt** (Krizhevsky 2014; common for Adam): lr × √k.

Keeping the same global batch instead (``batch_size=64`` on any replica count)
needs no change of learning rate: mirrorfit then trains the same weights on 1
or N replicas; each replica just gets ``64 / N`` samples per step.
"""

from __future__ import annotations

import math

import torch

from mirrorfit.callbacks.learning_rate_warmup import (
    LearningRateWarmup,
    check_warmup,
    warmup_factor,
)

# LearningRateWarmup and warmup_factor live in mirrorfit.callbacks.learning_rate_warmup;
# importing them from here keeps working
__all__ = ["LearningRateWarmup", "check_warmup", "scaled_learning_rate", "warmup_factor",
           "warmup_schedule"]

_RULES = ("linear", "sqrt", "none")


def scaled_learning_rate(base_lr: float, global_batch: int, base_batch: int,
                         rule: str = "linear") -> float:
    """The learning rate for ``global_batch`` given one tuned at ``base_batch``.

    Args:
        base_lr: the rate that worked at ``base_batch``.
        global_batch: the batch of one step over every replica.
        base_batch: the batch ``base_lr`` was tuned for.
        rule: 'linear', 'sqrt' or 'none'.

    Raises:
        ValueError: an unknown rule or a non-positive value.
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}; received {rule!r}.")
    if not base_lr > 0 or global_batch < 1 or base_batch < 1:
        raise ValueError(f"scaled_learning_rate needs base_lr > 0 and batches >= 1; received "
                         f"base_lr={base_lr!r}, global_batch={global_batch!r}, "
                         f"base_batch={base_batch!r}.")
    k = global_batch / base_batch
    factor = {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[rule]
    return base_lr * factor


def warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                    start_factor: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch scheduler for your own loop: call ``.step()`` after each ``optimizer.step()``.

    The optimizer's rate is the target; see :func:`warmup_factor` for the ramp.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.4)
        >>> sched = warmup_schedule(opt, warmup_steps=4)
        >>> rates = []
        >>> for _ in range(5):
        ...     rates.append(round(opt.param_groups[0]["lr"], 6))  # opt.step() goes here
        ...     sched.step()
        >>> rates
        [0.1, 0.2, 0.3, 0.4, 0.4]
    """
    check_warmup(warmup_steps, start_factor)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_factor(step, warmup_steps, start_factor))
