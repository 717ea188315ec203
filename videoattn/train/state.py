"""What a training checkpoint saves and a resume restores (:class:`TrainState`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from videoattn.engine import checkpoint as ckpt_lib
from videoattn.engine.inference import check_state_fits
from videoattn.models.cbam_form import check_cbam_form
from videoattn.utils.serialization import CheckpointError


@dataclass
class TrainState:
    """Everything a checkpoint saves and a resume restores, in one place."""

    model: nn.Module  # the plain module (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer updates done
    best_top1: float = -1.0  # best validation top-1 (fraction); -1 before any validation
    iteration: int = 0  # batches done in the epoch under way (0 at an epoch's start)
    resume_part: Optional[dict] = None  # this rank's RNG / sums where a mid-epoch checkpoint stopped

    def checkpoint(self, config: dict, rng_states: list, **extra) -> dict:
        """A PySlowFast-style checkpoint dict (``epoch`` = the 0-based epoch just completed)."""
        return ckpt_lib.make_checkpoint(
            self.model.state_dict(),
            config,
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            scaler_state=self.scaler.state_dict(),
            epoch=self.epoch - 1,
            global_step=self.step,
            best_top1=self.best_top1,
            rng_state=rng_states,
            **extra,
        )

    def restore(self, ckpt: dict, path: str) -> None:
        """Load a checkpoint written by :meth:`checkpoint`; a one-line error if the model (or its CBAM
        form) differs."""
        weights = ckpt_lib.unwrap_state_dict(ckpt["model_state"])
        hint = "auto-resume from output_dir: use another output_dir or train.auto_resume=false"
        check_cbam_form(self.model, ckpt, weights, f"{path} ({hint})")
        check_state_fits(self.model.state_dict(), weights, path, hint)
        self.model.load_state_dict(weights)
        check_groups_fit(self.optimizer, ckpt["optimizer_state"], f"{path} ({hint})")
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        self.scheduler.load_state_dict(ckpt["scheduler_state"])
        if ckpt.get("scaler_state"):
            self.scaler.load_state_dict(ckpt["scaler_state"])
        self.epoch, self.step = ckpt["epoch"] + 1, ckpt.get("global_step", 0)
        self.best_top1 = ckpt.get("best_top1", -1.0)


def check_groups_fit(optimizer: torch.optim.Optimizer, saved: dict, where: str) -> None:
    """A one-line :class:`CheckpointError` unless the saved optimizer state has the parameter groups
    (count and sizes) that ``optimizer`` has; they follow train.freeze, solver.head_lr_mult /
    backbone_lr_mult and solver.zero_wd_1d_param, so a change of one of them since the file was
    written shows here (torch would say "a parameter group that doesn't match the size")."""
    ours = [len(g["params"]) for g in optimizer.param_groups]
    theirs = [len(g["params"]) for g in saved.get("param_groups", [])]
    if ours != theirs:
        raise CheckpointError(
            f"{where}: its optimizer has parameter groups of sizes {theirs}, this config makes {ours}: "
            "train.freeze, solver.head_lr_mult / backbone_lr_mult or solver.zero_wd_1d_param differ from "
            "the run that wrote it"
        )
