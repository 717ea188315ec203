"""Models: ResNet-3D (I3D / C2D / Slow) with spacetime non-local blocks and per-frame CBAM.

``build_model(cfg)`` builds from a config; weights come from :mod:`videoattn.models.inflate`
(torchvision 2D ResNets) and :mod:`videoattn.models.convert` (pytorchvideo, PySlowFast).
"""

from videoattn.models.attention import capture_attention, capture_channels, cbam_blocks, zero_channels
from videoattn.models.builder import build_model
from videoattn.models.cbam import CBAM
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.models.presets import PRESETS
from videoattn.models.resnet3d import TEMPORAL_PATTERNS, ResNet3D, reset_head

__all__ = [
    "build_model",
    "capture_attention",
    "capture_channels",
    "cbam_blocks",
    "zero_channels",
    "reset_head",
    "ResNet3D",
    "NonLocal3d",
    "CBAM",
    "PRESETS",
    "TEMPORAL_PATTERNS",
]
