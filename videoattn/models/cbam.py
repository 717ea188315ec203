"""Per-frame CBAM (Woo et al., 2018) for video feature maps, in the forms people cite.

Every frame is attended independently: channel attention from the frame's own average- and
max-pooled descriptor, spatial attention from a 2D convolution over the frame's channel-wise
average and max maps. Nothing mixes information across time, so a CBAM-equipped block keeps
its temporal receptive field (that is the job of the 3D convolutions and the non-local block).
The one exception is the batch statistics of the official form's spatial BN in training mode,
which (like the 2D original's over its images) pool all frames of the batch.

Forms (``model.cbam.variant``, :class:`CBAMForm`):

* ``official``: the authors' released code (github Jongchan/attention-module, MODELS/cbam.py and
  the ResidualNet init in MODELS/model_resnet.py): channel MLP with biases (zero at init); spatial
  ``cat([max_c, mean_c]) -> conv kxk (no bias) -> BatchNorm2d(1, eps=1e-5, momentum=0.01) ->
  sigmoid`` with the BN's weight and bias 0 at init, so a fresh spatial gate is exactly 0.5; the
  spatial conv MSRA fan-out initialised as there.
* ``article``: the paper's equations as tutorials give them: channel MLP without biases; spatial
  ``cat([mean_c, max_c]) -> conv kxk (no bias) -> sigmoid``.
* ``legacy``: the form videoattn had before ``model.cbam.variant`` existed (MLP with biases,
  spatial pools mean then max, no BN, PyTorch's default init); checkpoints of then hold it.

``order`` (``channel_spatial`` | ``spatial_channel`` | ``parallel``: ``x * Mc(x) * Ms(x)`` from
the same ``x``) and ``gates`` (``both`` | ``channel`` | ``spatial``) choose how they combine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from einops import rearrange
from torch import nn

from videoattn.utils.errors import UsageError

VARIANTS = ("official", "article", "legacy")
ORDERS = ("channel_spatial", "spatial_channel", "parallel")
GATES = ("both", "channel", "spatial")


@dataclass(frozen=True)
class CBAMForm:
    """Which CBAM a model holds: ``variant``, ``order`` (matters only with both gates) and ``gates``."""

    variant: str = "official"
    order: str = "channel_spatial"
    gates: str = "both"

    def __post_init__(self):
        for key, value, allowed in (("variant", self.variant, VARIANTS), ("order", self.order, ORDERS)):
            if value not in allowed:
                raise UsageError(f"model.cbam.{key} must be one of {', '.join(allowed)}, got '{value}'")
        if self.gates not in GATES:
            raise UsageError(f"model.cbam.gates must be one of {', '.join(GATES)}, got '{self.gates}'")

    def key_values(self) -> dict:
        """``{config key: value}`` of what defines the computation (no ``order`` with one gate)."""
        keys = {"variant": self.variant, "gates": self.gates}
        if self.gates == "both":
            keys["order"] = self.order
        return keys

    def describe(self) -> str:
        """``'official'``, or ``'legacy' (gates channel)`` when order/gates are not the usual ones."""
        extra = [f"{k} {v}" for k, v in self.key_values().items() if k != "variant" and v != getattr(CBAMForm, k)]
        return f"'{self.variant}'" + (f" ({', '.join(extra)})" if extra else "")


class ChannelGate(nn.Module):
    """Per-frame channel weights ``sigmoid(MLP(avgpool_hw x) + MLP(maxpool_hw x))``, one shared MLP
    ``Linear(C, C/r) -> ReLU -> Linear(C/r, C)`` (with biases unless ``article``).

    ``x: (B, C, T, H, W) -> (B, C, T, 1, 1)`` in (0, 1).
    """

    def __init__(self, channels: int, reduction: int = 16, variant: str = "official"):
        super().__init__()
        hidden = max(channels // reduction, 1)
        bias = variant != "article"
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=bias)
        )
        if variant == "official":  # ResidualNet init: every bias 0 (the weights keep PyTorch's default)
            nn.init.zeros_(self.mlp[0].bias)
            nn.init.zeros_(self.mlp[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = rearrange(x.mean(dim=(3, 4)), "b c t -> b t c")
        mx = rearrange(x.amax(dim=(3, 4)), "b c t -> b t c")
        weights = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return rearrange(weights, "b t c -> b c t 1 1")


class SpatialGate(nn.Module):
    """Per-frame spatial map ``sigmoid(conv2d_kxk(pooled))``: ``pooled = [mean_c x, max_c x]``, or for
    ``official`` ``[max_c x, mean_c x]`` followed by ``BatchNorm2d(1)`` after the conv.

    ``x: (B, C, T, H, W) -> (B, 1, T, H, W)`` in (0, 1); the 2D kernel is shared by all frames.
    """

    def __init__(self, kernel_size: int = 7, variant: str = "official"):
        super().__init__()
        if kernel_size % 2 != 1:
            raise UsageError(f"CBAM spatial kernel_size must be odd, got {kernel_size}")
        self.max_first = variant == "official"
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn: Optional[nn.BatchNorm2d] = None
        if variant == "official":
            self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")  # every "conv" weight there
            nn.init.zeros_(self.bn.weight)  # "SpatialGate ... bn ... weight" = 0: the gate starts at 0.5
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        mean, mx = frames.mean(dim=1, keepdim=True), frames.amax(dim=1, keepdim=True)
        logits = self.conv(torch.cat([mx, mean] if self.max_first else [mean, mx], dim=1))
        attn = torch.sigmoid(logits if self.bn is None else self.bn(logits))
        return rearrange(attn, "(b t) 1 h w -> b 1 t h w", b=x.shape[0])


class CBAM(nn.Module):
    """CBAM of one :class:`CBAMForm`, frame by frame. ``x: (B, C, T, H, W) -> same shape``.

    ``channel`` / ``spatial`` are the gates (None when ``form.gates`` leaves one out).
    :func:`videoattn.models.capture_attention` records the spatial map with a forward hook on
    ``self.spatial``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, form: Optional[CBAMForm] = None):
        super().__init__()
        form = form or CBAMForm()
        self.form = form
        self.channel = ChannelGate(channels, reduction, form.variant) if form.gates != "spatial" else None
        self.spatial = SpatialGate(kernel_size, form.variant) if form.gates != "channel" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is None:
            return x * self.channel(x)
        if self.channel is None:
            return x * self.spatial(x)
        if self.form.order == "parallel":
            return x * self.channel(x) * self.spatial(x)
        if self.form.order == "spatial_channel":
            x = x * self.spatial(x)
            return x * self.channel(x)
        x = x * self.channel(x)
        return x * self.spatial(x)
