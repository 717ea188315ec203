"""Shared set-up of the inference tools (test, features, attention pictures): a model with
checkpoint weights in eval mode, and the split a list/folder/video input resolves to."""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import torch

from videoattn.config import Config
from videoattn.engine.checkpoint import (HEAD_PREFIX, CheckpointError, best_checkpoint_path, list_epoch_checkpoints,
                                         load_checkpoint)
from videoattn.models import build_model
from videoattn.utils.state_dict import unwrap_state_dict

log = logging.getLogger(__name__)


def check_state_fits(own: dict, state: dict, path: str, what: str = "") -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` has exactly ``own``'s keys and shapes.

    A classifier of another size is named as such (``model.num_classes``); other differences list
    the first mismatching keys. ``what`` says where the file came from (e.g. "auto-resume").
    """
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    src = f"{path}{f' ({what})' if what else ''}"
    if not (missing or unexpected or shape):
        return
    if shape and not missing and not unexpected and all(k.startswith(HEAD_PREFIX) for k in shape):
        raise CheckpointError(f"{src} has a {state[HEAD_PREFIX + 'weight'].shape[0]}-class head but "
                              f"model.num_classes={own[HEAD_PREFIX + 'weight'].shape[0]}")

    def head(keys):
        return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
    raise CheckpointError(
        f"{src} does not match the configured model (model.* keys / preset): "
        f"{len(missing)} missing [{head(missing)}], {len(unexpected)} unexpected [{head(unexpected)}], "
        f"{len(shape)} with another shape [{head(shape)}]")


def load_weights(model: torch.nn.Module, checkpoint_path: str, trust: bool = False) -> dict:
    """Load ``model_state`` of a videoattn / PySlowFast checkpoint into ``model`` (strict).

    Returns the checkpoint dict. Raises :class:`CheckpointError` naming the file and the
    mismatching keys when the checkpoint does not fit the configured architecture, and
    :class:`UntrustedCheckpointError` when it needs full unpickling and ``trust`` is False.
    """
    ckpt = load_checkpoint(checkpoint_path, trust=trust)
    state = unwrap_state_dict(ckpt["model_state"])
    check_state_fits(model.state_dict(), state, checkpoint_path)
    model.load_state_dict(state)
    return ckpt


def check_num_classes(classes: Sequence[str], num_classes: int, source: str) -> None:
    """One-line ValueError unless the class list fits ``model.num_classes``.

    Named classes (a classes file, CSV labels, class folders) must number exactly
    ``num_classes``; classes inferred from a list's label indices ("0".."N-1") may be fewer.
    """
    inferred = list(classes) == [str(i) for i in range(len(classes))]
    if len(classes) == num_classes or (inferred and len(classes) < num_classes):
        return
    what = f"label indices up to {len(classes) - 1}" if inferred else f"{len(classes)} classes"
    raise ValueError(f"model.num_classes={num_classes} but {source} has {what}; "
                     f"set model.num_classes={len(classes)}" + (" or more" if inferred else ""))


def resolve_checkpoint(cfg: Config, checkpoint_path: Optional[str] = None) -> str:
    """The weights to evaluate, PySlowFast style: ``checkpoint_path`` > ``test.checkpoint_file`` >
    ``output_dir/checkpoints/checkpoint_best.pyth`` > the newest ``checkpoint_epoch_*.pyth`` there."""
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


def build_inference_model(cfg: Config, checkpoint_path: Optional[str], device: torch.device,
                          random_init: bool = False, trust: bool = False) -> torch.nn.Module:
    """``build_model(cfg)`` with checkpoint weights (see :func:`resolve_checkpoint`), on
    ``device``, in eval mode. ``random_init=True`` skips the weights (benchmarks only);
    ``trust=True`` allows a checkpoint that needs full unpickling (``--trust-checkpoint``)."""
    model = build_model(cfg.model)
    if not random_init:
        path = resolve_checkpoint(cfg, checkpoint_path)
        load_weights(model, path, trust)
        log.info("evaluating weights from %s", path)
    return model.to(device).eval()
