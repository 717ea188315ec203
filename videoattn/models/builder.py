"""``build_model(cfg)``: the config's ``model`` section -> :class:`ResNet3D`; ``compile_model``."""
from __future__ import annotations

import torch
from torch import nn

from videoattn.models.resnet3d import ResNet3D


def build_model(cfg) -> ResNet3D:
    """Build the network described by ``cfg.model`` (a full config; see ``videoattn/config/schema.py``).

    Presets (``model.preset``) are already expanded by :func:`videoattn.config.load_config`.
    ``model.channels_last``: weights in ``torch.channels_last_3d``; the caller converts inputs
    (``x.contiguous(memory_format=torch.channels_last_3d)``) to keep every conv in that layout.
    """
    m = cfg.model
    model = ResNet3D(
        depth=int(m.depth), base_channels=int(m.base_channels), temporal=str(m.temporal),
        num_classes=int(m.num_classes), dropout=float(m.dropout),
        nonlocal_locations=[list(loc) for loc in m.non_local.locations],
        nonlocal_instantiation=str(m.non_local.instantiation),
        nonlocal_subsample=list(m.non_local.subsample), nonlocal_inter_ratio=float(m.non_local.inter_ratio),
        cbam_stages=list(m.cbam.stages), cbam_reduction=int(m.cbam.reduction),
        cbam_kernel_size=int(m.cbam.kernel_size),
    )
    return to_channels_last_3d(model) if m.channels_last else model


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Every 5-D parameter and buffer of ``model`` in ``torch.channels_last_3d``, in place.

    Not ``model.to(memory_format=torch.channels_last_3d)``: that fails on the 4-D weight of
    CBAM's per-frame 2D conv ("required rank 5 tensor to use channels_last_3d format").
    """
    return model._apply(lambda t: t.contiguous(memory_format=torch.channels_last_3d) if t.dim() == 5 else t)


def compile_model(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` (default mode) if ``enabled`` (``train.compile``), else ``model``.

    The compiled wrapper shares parameters with ``model``; keep ``model`` for state dicts and
    evaluation (the wrapper's keys carry ``_orig_mod.``).
    """
    return torch.compile(model) if enabled else model
