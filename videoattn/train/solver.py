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

import logging
import math
from typing import List

import torch
from torch import nn

from videoattn.config import SolverConfig
from videoattn.utils.errors import UsageError

LR_POLICIES = ("cosine", "steps")
logger = logging.getLogger(__name__)


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


HEAD_PREFIX = "head."  # parameters that solver.head_lr_mult scales; every other one is the backbone's


def param_groups(
    model: nn.Module,
    weight_decay: float,
    zero_wd_1d_param: bool,
    head_lr_mult: float = 1.0,
    backbone_lr_mult: float = 1.0,
) -> List[dict]:
    """Parameter groups, each with its ``lr_mult`` (the schedule's rate times it is its LR).

    With ``zero_wd_1d_param`` every 1-d parameter (BN/GN/LN weights and biases, and all conv/linear
    biases) goes into a group with weight decay 0. Equal multipliers: one group per decay (the
    layout of checkpoints written before the multipliers existed); else the backbone's groups, then
    the head's. Parameters with ``requires_grad`` off (``train.freeze``) are in none. Empty groups
    are left out.
    """
    split = head_lr_mult != backbone_lr_mult
    parts = [("", backbone_lr_mult)] if not split else [("backbone", backbone_lr_mult), ("head", head_lr_mult)]
    members: dict = {(part, decays): [] for part, _ in parts for decays in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = ("head" if name.startswith(HEAD_PREFIX) else "backbone") if split else ""
        members[(part, not (zero_wd_1d_param and p.ndim <= 1))].append(p)
    groups = []
    for part, mult in parts:
        for decays in (True, False):
            params = members[(part, decays)]
            if params or (decays and not split and not groups):  # today's layout always had the decay group
                groups.append({"params": params, "weight_decay": weight_decay if decays else 0.0, "lr_mult": mult})
    return groups


def build_optimizer(model: nn.Module, s: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum (optionally Nesterov) and weight decay, from ``s`` (``cfg.solver``)."""
    if s.head_lr_mult != s.backbone_lr_mult:
        logger.info(
            "learning rates: the schedule's x%g for the backbone, x%g for the head", s.backbone_lr_mult, s.head_lr_mult
        )
    return torch.optim.SGD(
        param_groups(model, s.weight_decay, s.zero_wd_1d_param, s.head_lr_mult, s.backbone_lr_mult),
        lr=s.base_lr,
        momentum=s.momentum,
        nesterov=s.nesterov and s.momentum > 0,
        dampening=0.0,
    )


def schedule_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's current rate, before any group's multiplier (what logs and metrics show)."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_mult", 1.0)


def build_scheduler(
    optimizer: torch.optim.Optimizer, s: SolverConfig, updates_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-update schedule: call ``scheduler.step()`` after every ``optimizer.step()``.

    Right after construction (and after each step) every group's ``lr`` holds the rate for the
    next update, i.e. ``lr_at_epoch(s, updates_done / updates_per_epoch) * group["lr_mult"]``.
    """
    if updates_per_epoch < 1:
        raise UsageError("the training loader yields no batches (updates_per_epoch=0)")
    for g in optimizer.param_groups:
        g["lr"] = s.base_lr * g.get("lr_mult", 1.0)  # LambdaLR scales each group's initial lr by the factor below

    def factor(update: int) -> float:
        return lr_at_epoch(s, update / updates_per_epoch) / s.base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
