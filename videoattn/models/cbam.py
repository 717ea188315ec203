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
import torch.nn.functional as F
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
        avg, mx = x.mean(dim=(3, 4)), x.amax(dim=(3, 4))  # (B, C, T) each
        return torch.sigmoid(self._mlp(avg) + self._mlp(mx))[..., None, None]

    def _mlp(self, d: torch.Tensor) -> torch.Tensor:
        """``self.mlp`` along the channels of ``d: (B, C, T) -> (B, C, T)``, each Linear as a width-1 conv1d.

        The same numbers as ``self.mlp`` on ``(B, T, C)``, without moving C last: a reshape of the
        permuted view would fix the time and size of a model exported with dynamic shapes
        (torch.export cannot tell whether it is a view for every size).
        """
        fc1, fc2 = self.mlp[0], self.mlp[2]
        return F.conv1d(F.relu(F.conv1d(d, fc1.weight[:, :, None], fc1.bias)), fc2.weight[:, :, None], fc2.bias)


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
        # Frame by frame without folding T into the batch (a reshape of the permuted view, which
        # would fix the time and size of a model exported with dynamic shapes): the 2D kernel as a
        # (1, k, k) conv3d, the BatchNorm2d(1) on (B, 1, T*H, W), which holds the same values.
        mean, mx = x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)  # (B, 1, T, H, W)
        pooled = torch.cat([mx, mean] if self.max_first else [mean, mx], dim=1)
        pad = self.conv.padding[0]
        logits = F.conv3d(pooled, self.conv.weight[:, :, None], padding=(0, pad, pad))  # (B, 1, T, H, W)
        if self.bn is not None:
            logits = self.bn(logits.flatten(2, 3)).view_as(logits)
        return torch.sigmoid(logits)


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
