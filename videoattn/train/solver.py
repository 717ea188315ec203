"""Optimiser and learning-rate schedule (PySlowFast ``SOLVER.*`` semantics).

The schedule is a function of the fractional epoch ``e = epoch + update / updates_per_epoch``
and is applied once per optimiser update (not per epoch), as PySlowFast does:

* ``cosine``: ``end + (base - end) * (1 + cos(pi * e / max_epoch)) / 2``
* ``steps``:  ``base * gamma ** (number of solver.steps <= e)``
* warm-up: for ``e < warmup_epochs`` the rate rises linearly from ``warmup_start_lr`` to the
  policy's value at ``warmup_epochs``.

It is wrapped in ``torch.optim.lr_scheduler.LambdaLR`` so that its state (the update counter)
goes into checkpoints with ``state_dict()``.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from videoattn.config import SolverConfig
from videoattn.utils.errors import UsageError

LR_POLICIES = ("cosine", "steps")


def _policy_lr(solver: SolverConfig, epoch: float) -> float:
    if solver.lr_policy == "cosine":
        return (
            solver.cosine_end_lr
            + (solver.base_lr - solver.cosine_end_lr) * (1.0 + math.cos(math.pi * epoch / solver.max_epoch)) * 0.5
        )
    if solver.lr_policy == "steps":
        return solver.base_lr * solver.gamma ** sum(1 for s in solver.steps if epoch >= s)
    raise UsageError(f"unknown solver.lr_policy '{solver.lr_policy}' (choose from {', '.join(LR_POLICIES)})")


def lr_at_epoch(solver: SolverConfig, epoch: float) -> float:
    """Learning rate at fractional epoch ``epoch`` (``solver`` is ``cfg.solver``)."""
    lr = _policy_lr(solver, epoch)
    if epoch < solver.warmup_epochs:
        end = _policy_lr(solver, solver.warmup_epochs)
        lr = solver.warmup_start_lr + (end - solver.warmup_start_lr) * epoch / solver.warmup_epochs
    return lr


def param_groups(model: nn.Module, weight_decay: float, zero_wd_1d_param: bool) -> List[dict]:
    """Parameter groups: with ``zero_wd_1d_param`` every 1-d parameter (BN/GN/LN weights and
    biases, and all conv/linear biases) goes into a group with weight decay 0."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if zero_wd_1d_param and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, s: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum (optionally Nesterov) and weight decay, from ``s`` (``cfg.solver``)."""
    return torch.optim.SGD(
        param_groups(model, s.weight_decay, s.zero_wd_1d_param),
        lr=s.base_lr,
        momentum=s.momentum,
        nesterov=s.nesterov and s.momentum > 0,
        dampening=0.0,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, s: SolverConfig, updates_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-update schedule: call ``scheduler.step()`` after every ``optimizer.step()``.

    Right after construction (and after each step) every group's ``lr`` holds the rate for the
    next update, i.e. ``lr_at_epoch(s, updates_done / updates_per_epoch)``.
    """
    if updates_per_epoch < 1:
        raise UsageError("the training loader yields no batches (updates_per_epoch=0)")
    for g in optimizer.param_groups:
        g["lr"] = s.base_lr  # LambdaLR scales each group's initial lr by the factor below

    def factor(update: int) -> float:
        return lr_at_epoch(s, update / updates_per_epoch) / s.base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
