"""``build_model(cfg)``: the config's ``model`` section -> :class:`ResNet3D`."""
from __future__ import annotations

from videoattn.models.resnet3d import ResNet3D


def build_model(cfg) -> ResNet3D:
    """Build the network described by ``cfg.model`` (a full config; see ``videoattn/config/schema.py``).

    Presets (``model.preset``) are already expanded by :func:`videoattn.config.load_config`.
    """
    m = cfg.model
    return ResNet3D(
        depth=int(m.depth), base_channels=int(m.base_channels), temporal=str(m.temporal),
        num_classes=int(m.num_classes), dropout=float(m.dropout),
        nonlocal_locations=[list(loc) for loc in m.non_local.locations],
        nonlocal_instantiation=str(m.non_local.instantiation),
        nonlocal_subsample=list(m.non_local.subsample), nonlocal_inter_ratio=float(m.non_local.inter_ratio),
        cbam_stages=list(m.cbam.stages), cbam_reduction=int(m.cbam.reduction),
        cbam_kernel_size=int(m.cbam.kernel_size),
    )
