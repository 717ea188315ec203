"""Per-frame CBAM (Woo et al., 2018) for video feature maps.

Every frame is attended independently: channel attention from the frame's own average- and
max-pooled descriptor, spatial attention from a 2D convolution over the frame's channel-wise
average and max maps. Nothing mixes information across time, so a CBAM-equipped block keeps
its temporal receptive field (that is the job of the 3D convolutions and the non-local block).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from videoattn.utils.errors import UsageError


class ChannelGate(nn.Module):
    """Per-frame channel weights ``sigmoid(MLP(avgpool_hw x) + MLP(maxpool_hw x))``.

    ``x: (B, C, T, H, W) -> (B, C, T, 1, 1)`` in (0, 1).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = rearrange(x.mean(dim=(3, 4)), "b c t -> b t c")
        mx = rearrange(x.amax(dim=(3, 4)), "b c t -> b t c")
        weights = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return rearrange(weights, "b t c -> b c t 1 1")


class SpatialGate(nn.Module):
    """Per-frame spatial map ``sigmoid(conv2d_kxk([mean_c x, max_c x]))``.

    ``x: (B, C, T, H, W) -> (B, 1, T, H, W)`` in (0, 1); the 2D kernel is shared by all frames.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise UsageError(f"CBAM spatial kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        pooled = torch.cat([frames.mean(dim=1, keepdim=True), frames.amax(dim=1, keepdim=True)], dim=1)
        attn = torch.sigmoid(self.conv(pooled))
        return rearrange(attn, "(b t) 1 h w -> b 1 t h w", b=x.shape[0])


class CBAM(nn.Module):
    """Channel then spatial attention, frame by frame. ``x: (B, C, T, H, W) -> same shape``.

    The spatial map is what :func:`videoattn.models.capture_attention` records (a forward hook
    on ``self.spatial``).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)
