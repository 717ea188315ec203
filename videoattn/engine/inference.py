"""Shared set-up of the inference tools (test, features, attention pictures): a model with
checkpoint weights in eval mode, and the split a list/folder/video input resolves to."""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
from omegaconf import DictConfig

from videoattn.engine.checkpoint import CheckpointError, load_checkpoint, unwrap_state_dict

log = logging.getLogger(__name__)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers.

    Evaluation must not run through DDP: ranks may hold different numbers of batches and DDP's
    forward would wait for the others (buffer broadcast)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def load_weights(model: torch.nn.Module, checkpoint_path: str) -> dict:
    """Load ``model_state`` of a videoattn / PySlowFast checkpoint into ``model`` (strict).

    Returns the checkpoint dict. Raises :class:`CheckpointError` naming the file and the
    mismatching keys when the checkpoint does not fit the configured architecture.
    """
    ckpt = load_checkpoint(checkpoint_path)
    state = unwrap_state_dict(ckpt["model_state"])
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        def head(keys):
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise CheckpointError(
            f"{checkpoint_path} does not match the configured model (model.* keys / preset): "
            f"{len(missing)} missing [{head(missing)}], {len(unexpected)} unexpected [{head(unexpected)}], "
            f"{len(shape)} with another shape [{head(shape)}]")
    model.load_state_dict(state)
    return ckpt


def resolve_checkpoint(cfg: DictConfig, checkpoint_path: Optional[str] = None) -> str:
    """The weights to evaluate, PySlowFast style: ``checkpoint_path`` > ``test.checkpoint_file`` >
    ``output_dir/checkpoints/checkpoint_best.pyth`` > the newest ``checkpoint_epoch_*.pyth`` there."""
    from videoattn.engine.checkpoint import best_checkpoint_path, list_epoch_checkpoints

    if checkpoint_path or cfg.test.checkpoint_file:
        return checkpoint_path or cfg.test.checkpoint_file
    best = best_checkpoint_path(cfg.output_dir)
    if os.path.isfile(best):
        return best
    epochs = list_epoch_checkpoints(cfg.output_dir)
    if epochs:
        return epochs[-1][1]
    raise CheckpointError(f"no checkpoint given (--checkpoint / test.checkpoint_file) and none found in "
                          f"{os.path.join(cfg.output_dir, 'checkpoints')}")


def build_inference_model(cfg: DictConfig, checkpoint_path: Optional[str], device: torch.device,
                          random_init: bool = False) -> torch.nn.Module:
    """``build_model(cfg)`` with checkpoint weights (see :func:`resolve_checkpoint`), on
    ``device``, in eval mode. ``random_init=True`` skips the weights (benchmarks only)."""
    from videoattn.models import build_model

    model = build_model(cfg)
    if not random_init:
        path = resolve_checkpoint(cfg, checkpoint_path)
        load_weights(model, path)
        log.info("evaluating weights from %s", path)
    return model.to(device).eval()
