"""``build_model(model_cfg)``: a ``model`` config section -> :class:`ResNet3D`; ``compile_model``."""

from __future__ import annotations

import torch
from torch import nn

from videoattn.config.schema import ModelConfig
from videoattn.models.cbam import CBAMForm
from videoattn.models.presets import resolve_model_config
from videoattn.models.resnet3d import ResNet3D


def build_model(model: ModelConfig) -> ResNet3D:
    """Build the network that ``model`` (``cfg.model``, see ``videoattn/config/schema.py``) describes;
    ``model.preset`` and the standard values fill the keys it leaves unset.

    ``model.channels_last``: weights in ``torch.channels_last_3d`` (the engine feeds inputs in that
    layout too, see :class:`~videoattn.data.transforms.DeviceNormalizer`); None counts as off here.
    """
    m = resolve_model_config(model)
    net = ResNet3D(
        depth=m.depth,
        base_channels=m.base_channels,
        temporal=m.temporal,
        num_classes=m.num_classes,
        dropout=m.dropout,
        nonlocal_locations=m.non_local.locations,
        nonlocal_instantiation=m.non_local.instantiation,
        nonlocal_subsample=m.non_local.subsample,
        nonlocal_inter_ratio=m.non_local.inter_ratio,
        nonlocal_attention=m.non_local.attention,
        nonlocal_window=m.non_local.window,
        cbam_stages=m.cbam.stages,
        cbam_reduction=m.cbam.reduction,
        cbam_kernel_size=m.cbam.kernel_size,
        cbam_form=CBAMForm(m.cbam.variant, m.cbam.order, m.cbam.gates),
        zero_init_final_bn=m.zero_init_final_bn,
    )
    return to_channels_last_3d(net) if m.channels_last else net


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
