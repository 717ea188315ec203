"""``build_model(model_cfg)``: a ``model`` config section -> :class:`ResNet3D`."""
from __future__ import annotations

from videoattn.config.schema import ModelConfig
from videoattn.models.presets import resolve_model_config
from videoattn.models.resnet3d import ResNet3D


def build_model(model: ModelConfig) -> ResNet3D:
    """Build the network that ``model`` (``cfg.model``, see ``videoattn/config/schema.py``) describes;
    ``model.preset`` and the standard values fill the keys it leaves unset."""
    m = resolve_model_config(model)
    return ResNet3D(
        depth=m.depth, base_channels=m.base_channels, temporal=m.temporal, num_classes=m.num_classes,
        dropout=m.dropout, nonlocal_locations=m.non_local.locations, nonlocal_instantiation=m.non_local.instantiation,
        nonlocal_subsample=m.non_local.subsample, nonlocal_inter_ratio=m.non_local.inter_ratio,
        cbam_stages=m.cbam.stages, cbam_reduction=m.cbam.reduction, cbam_kernel_size=m.cbam.kernel_size,
    )
