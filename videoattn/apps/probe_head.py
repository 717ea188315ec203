"""The probe as its backbone's head: which weights the features came from, the standardisation
folded into ``head.proj``, and the checkpoint test_net and predict run (see :mod:`videoattn.apps.probe`)."""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from videoattn.apps.probe_data import ProbeSplit
from videoattn.apps.probe_fit import LinearFit, Standardiser
from videoattn.config import Config, config_to_dict
from videoattn.engine.checkpoint import HEAD_PREFIX, make_checkpoint
from videoattn.engine.session import one_process_session
from videoattn.utils.download import sha256_file
from videoattn.utils.errors import UsageError
from videoattn.utils.io import atomic_path

log = logging.getLogger(__name__)
SOURCE = "linear_probe"  # the checkpoint's meta.source


@dataclass
class BackboneSpec:
    """The backbone asked for: ``--checkpoint`` or ``--pretrained`` (neither: no checkpoint)."""

    checkpoint: str = ""
    pretrained: str = ""
    trust: bool = False


@dataclass
class Backbone:
    """The backbone's ``model_state`` (CPU tensors), where it came from, and its head's input size."""

    state: Dict[str, torch.Tensor]
    source: str
    feature_dim: int


def recorded_weights(splits: Dict[str, ProbeSplit]) -> str:
    """The one source of weights the features record ("" if they record none: extracted before
    extract_features wrote it); features of several are refused."""
    found = sorted({w for s in splits.values() for w in s.weights} - {""})
    if len(found) > 1:
        raise UsageError(
            f"the features come from {len(found)} different weights ({found[0]}; {found[1]}): use one backbone"
        )
    return found[0] if found else ""


def check_backbone(recorded: str, o: BackboneSpec) -> None:
    """One line if the backbone given is not the one the features were extracted with (a file of
    the same content elsewhere passes; a recorded file that is gone only gets a warning)."""
    if not recorded:
        log.warning("probe: the features do not say which weights they came from; trusting --checkpoint/--pretrained")
        return
    if recorded.startswith("pretrained:"):
        same = o.pretrained == recorded.split(":", 1)[1].split(" ", 1)[0]
    elif o.pretrained or not os.path.isfile(recorded):
        same = not o.pretrained
        if same:
            log.warning("probe: the features came from %s, which is gone; trusting --checkpoint", recorded)
    else:
        same = os.path.samefile(recorded, o.checkpoint) or sha256_file(recorded) == sha256_file(o.checkpoint)
    if not same:
        raise UsageError(
            f"the features came from {recorded}, not from {o.checkpoint or 'pretrained:' + o.pretrained}; "
            "the probe's checkpoint needs the backbone the features came from"
        )


def load_backbone(cfg: Config, o: BackboneSpec, layer: str, dim: int) -> Optional[Backbone]:
    """The backbone's ``model_state`` (None without ``--checkpoint`` / ``--pretrained``); one line
    if the features cannot be its head's input."""
    if not (o.checkpoint or o.pretrained):
        return None
    if layer != "pool":
        raise UsageError(
            f"features of layer {layer!r} are not the head's input; a checkpoint needs features.layer=pool "
            f"(or leave out --checkpoint/--pretrained for the probe's numbers alone)"
        )
    cpu = dataclasses.replace(cfg, device="cpu", model=dataclasses.replace(cfg.model, channels_last=False))
    with one_process_session(cpu, precision=None) as session:  # weights only: CPU, the stored layout
        model, weights = session.load_model(o.checkpoint or None, trust=o.trust, pretrained=o.pretrained)
    proj = model.head.proj
    if proj.in_features != dim:
        raise UsageError(f"the features are {dim}-d but {weights.source}'s head takes {proj.in_features}-d input")
    return Backbone({k: v.detach().clone() for k, v in model.state_dict().items()}, weights.source, dim)


def fold_head(fit: LinearFit, std: Standardiser) -> Dict[str, torch.Tensor]:
    """``head.proj`` weights on raw features: ``W' = W / std``, ``b' = b - W (mean / std)`` (float32)."""
    w, b = fit.weight.numpy(), fit.bias.numpy()
    return {
        HEAD_PREFIX + "weight": torch.from_numpy(w / std.std[None, :]).float(),
        HEAD_PREFIX + "bias": torch.from_numpy(b - w @ (std.mean / std.std)).float(),
    }


def probe_checkpoint(cfg: Config, backbone: Backbone, head: Dict[str, torch.Tensor], classes: List[str], info: dict):
    """The backbone's checkpoint with the probe as its head (``model.num_classes`` = the probe's)."""
    state = dict(backbone.state)
    state.update(head)
    config = config_to_dict(cfg)
    config["model"]["num_classes"] = len(classes)
    return make_checkpoint(state, config, source=SOURCE, classes=list(classes), probe=info)


def write_head(path: str, fit: LinearFit, std: Standardiser, head: Dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            weight=fit.weight.numpy(),
            bias=fit.bias.numpy(),
            mean=std.mean,
            std=std.std,
            folded_weight=head[HEAD_PREFIX + "weight"].numpy(),
            folded_bias=head[HEAD_PREFIX + "bias"].numpy(),
        )
