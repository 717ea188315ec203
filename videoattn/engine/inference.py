"""Shared set-up of the inference tools (test, features, attention pictures, predict): a model
with checkpoint (or public pretrained) weights in eval mode, and the class names to show."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from videoattn.config import Config, DataConfig
from videoattn.data.annotations import default_classes, load_classes
from videoattn.engine.checkpoint import (
    HEAD_PREFIX,
    CheckpointError,
    best_checkpoint_path,
    list_epoch_checkpoints,
    load_checkpoint,
)
from videoattn.models import build_model
from videoattn.models.cbam_form import check_cbam_form
from videoattn.models.pretrained import load_pretrained_weights, pretrained_entry
from videoattn.utils.errors import UsageError
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
        raise CheckpointError(
            f"{src} has a {state[HEAD_PREFIX + 'weight'].shape[0]}-class head but "
            f"model.num_classes={own[HEAD_PREFIX + 'weight'].shape[0]}"
        )

    def head(keys):
        return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")

    raise CheckpointError(
        f"{src} does not match the configured model (model.* keys / preset): "
        f"{len(missing)} missing [{head(missing)}], {len(unexpected)} unexpected [{head(unexpected)}], "
        f"{len(shape)} with another shape [{head(shape)}]"
    )


def load_weights(model: torch.nn.Module, checkpoint_path: str, trust: bool = False) -> dict:
    """Load ``model_state`` of a videoattn / PySlowFast checkpoint into ``model`` (strict).

    Returns the checkpoint dict. Raises :class:`CheckpointError` naming the file and the
    mismatching keys when the checkpoint does not fit the configured architecture (or, in one line
    with the override to use, when it holds another CBAM form: :mod:`videoattn.models.cbam_form`), and
    :class:`UntrustedCheckpointError` when it needs full unpickling and ``trust`` is False.
    """
    ckpt = load_checkpoint(checkpoint_path, trust=trust)
    state = unwrap_state_dict(ckpt["model_state"])
    check_cbam_form(model, ckpt, state, checkpoint_path)
    check_state_fits(model.state_dict(), state, checkpoint_path)
    model.load_state_dict(state)
    return ckpt


def check_num_classes(classes: Sequence[str], num_classes: int, source: str) -> None:
    """One-line UsageError unless the class list fits ``model.num_classes``.

    Named classes (a classes file, CSV labels, class folders) must number exactly
    ``num_classes``; classes inferred from a list's label indices ("0".."N-1") may be fewer.
    """
    inferred = list(classes) == [str(i) for i in range(len(classes))]
    if len(classes) == num_classes or (inferred and len(classes) < num_classes):
        return
    what = f"label indices up to {len(classes) - 1}" if inferred else f"{len(classes)} classes"
    raise UsageError(
        f"model.num_classes={num_classes} but {source} has {what}; "
        f"set model.num_classes={len(classes)}" + (" or more" if inferred else "")
    )


def resolve_weights(cfg: Config, checkpoint_path: Optional[str] = None, pretrained: str = "") -> Tuple[str, str]:
    """``("checkpoint", path)`` or ``("pretrained", name)``: ``checkpoint_path`` > ``pretrained``
    (``--pretrained``) > ``test.checkpoint_file`` > ``output_dir/checkpoints/checkpoint_best.pyth`` >
    the newest ``checkpoint_epoch_*.pyth`` there > ``model.pretrained`` (the weights training
    started from, as PySlowFast falls back to TRAIN.CHECKPOINT_FILE_PATH)."""
    if checkpoint_path or (cfg.test.checkpoint_file and not pretrained):
        return "checkpoint", checkpoint_path or cfg.test.checkpoint_file
    if pretrained:
        return "pretrained", pretrained
    best = best_checkpoint_path(cfg.output_dir)
    if os.path.isfile(best):
        return "checkpoint", best
    epochs = list_epoch_checkpoints(cfg.output_dir)
    if epochs:
        return "checkpoint", epochs[-1][1]
    if cfg.model.pretrained:
        return "pretrained", cfg.model.pretrained
    raise CheckpointError(
        f"no checkpoint given (--checkpoint / --pretrained / test.checkpoint_file) and none found "
        f"in {os.path.join(cfg.output_dir, 'checkpoints')}"
    )


@dataclass
class LoadedWeights:
    """Where an inference model's weights came from, and the class names they bring (a pretrained
    Kinetics-400 head, or a checkpoint's ``classes`` list; None if they bring none)."""

    source: str
    classes: Optional[List[str]] = None


def _checkpoint_classes(ckpt: dict, num_classes: int) -> Optional[List[str]]:
    names = ckpt.get("classes")
    if isinstance(names, (list, tuple)) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return list(names)
    return None


def _load_pretrained(model: torch.nn.Module, name: str, num_classes: int) -> LoadedWeights:
    """Public weights ``name`` into ``model``; their head must load (inference needs the classifier)."""
    info = load_pretrained_weights(model, name)
    if info.classes is None:
        n = pretrained_entry(name)["num_classes"]
        raise CheckpointError(
            f"pretrained '{name}' has a {n}-class head but model.num_classes={num_classes}; "
            f"set model.num_classes={n} to run it (other class counts are for fine-tuning)"
        )
    for note in info.notes:
        log.info("pretrained %s: %s", name, note)
    return LoadedWeights(f"pretrained:{name} ({info.path}, sha256 {info.sha256[:16]})", info.classes)


def load_inference_model(
    cfg: Config,
    checkpoint_path: Optional[str],
    device: torch.device,
    random_init: bool = False,
    trust: bool = False,
    pretrained: str = "",
) -> Tuple[torch.nn.Module, LoadedWeights]:
    """``build_model(cfg.model)`` with the weights :func:`resolve_weights` picks, on ``device``, in
    eval mode, and what was loaded. ``random_init=True`` skips the weights (benchmarks only);
    ``trust=True`` allows a checkpoint that needs full unpickling (``--trust-checkpoint``)."""
    model = build_model(cfg.model)
    weights = LoadedWeights("random initialisation")
    if not random_init:
        kind, what = resolve_weights(cfg, checkpoint_path, pretrained)
        if kind == "pretrained":
            weights = _load_pretrained(model, what, cfg.model.num_classes)
        else:
            weights = LoadedWeights(what, _checkpoint_classes(load_weights(model, what, trust), cfg.model.num_classes))
        log.info("evaluating weights from %s", weights.source)
    return model.to(device).eval(), weights


def build_inference_model(
    cfg: Config,
    checkpoint_path: Optional[str],
    device: torch.device,
    random_init: bool = False,
    trust: bool = False,
    pretrained: str = "",
) -> torch.nn.Module:
    """The model of :func:`load_inference_model` alone."""
    return load_inference_model(cfg, checkpoint_path, device, random_init, trust, pretrained)[0]


def class_names_for(data: DataConfig, num_classes: int, fallback: Optional[Sequence[str]] = None) -> List[str]:
    """``num_classes`` names to show: ``data.classes_file`` or the training split's labels; where the
    dataset has none (or only label indices "0".."N-1"), ``fallback`` (the names the weights
    bring, see :class:`LoadedWeights`); missing names are ``class_<i>``. A class list longer than
    ``num_classes`` is a one-line UsageError (the names would not match the outputs)."""
    try:
        names = (
            load_classes(data.root, data.classes_file)
            if data.classes_file
            else default_classes(data.root, data.train_split) or []
        )
    except (OSError, ValueError):  # no annotations at hand: predictions are still useful
        names = []
    inferred = names == [str(i) for i in range(len(names))]
    if fallback and (not names or inferred):
        names = list(fallback)
    elif len(names) > num_classes and not inferred:
        raise UsageError(
            f"model.num_classes={num_classes} but the class list "
            f"({data.classes_file or 'labels of ' + data.train_split}) has {len(names)} classes"
        )
    return names[:num_classes] + [f"class_{i}" for i in range(len(names), num_classes)]
