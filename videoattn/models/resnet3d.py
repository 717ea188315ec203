"""ResNet-3D backbones (I3D / C2D / Slow) with optional non-local blocks and per-frame CBAM.

Layout follows PySlowFast's ResNet and pytorchvideo's ``create_resnet`` exactly (so their
weights convert 1:1): a (kt x 7 x 7) stem with stride (1, 2, 2) and a (1 x 3 x 3) max-pool,
four stages res2..res5 whose first block strides (1, 2, 2) spatially (on the 3x3 conv), an
optional temporal max-pool after res2, global average pooling, dropout and a linear head.
Module names mirror torchvision's 2D ResNet (``conv1``/``bn1``/.../``downsample``) so 2D
weights inflate by name.

Temporal kernels are data (:data:`TEMPORAL_PATTERNS`): per stage a basis cycled over the
blocks, e.g. I3D res3 ``[3, 1]`` -> blocks use 3, 1, 3, 1 in their first convolution.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from videoattn.models.attention_kinds import check_kind
from videoattn.models.cbam import CBAM, CBAMForm
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.utils.errors import UsageError

# stem: temporal kernel of the stem conv; stages: per-stage basis of temporal kernels cycled
# over blocks (PySlowFast _TEMPORAL_KERNEL_BASIS); pool1: temporal max-pool after res2.
TEMPORAL_PATTERNS: Dict[str, dict] = {
    "i3d": {"stem": 5, "stages": [[3], [3, 1], [3, 1], [1, 3]], "pool1": 2},
    "c2d": {"stem": 1, "stages": [[1], [1], [1], [1]], "pool1": 2},
    "slow": {"stem": 1, "stages": [[1], [1], [3], [3]], "pool1": 1},
}
STAGE_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGES = ("res2", "res3", "res4", "res5")


class Stem(nn.Module):
    """``conv (kt, 7, 7) / (1, 2, 2) -> BN -> ReLU -> maxpool (1, 3, 3) / (1, 2, 2)``.

    ``x: (B, 3, T, H, W) -> (B, C, T, H/4, W/4)``.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            (temporal_kernel, 7, 7),
            stride=(1, 2, 2),
            padding=(temporal_kernel // 2, 3, 3),
            bias=False,
        )
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


def _downsample(in_channels: int, out_channels: int, stride: int) -> Optional[nn.Sequential]:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False), nn.BatchNorm3d(out_channels)
    )


class _ResBlock(nn.Module):
    """Residual block: ``relu(x' + CBAM(branch(x)))`` then an optional non-local block.

    Subclasses define ``branch``; ``cbam`` and ``nl`` are None when absent.
    """

    expansion = 1
    cbam: Optional[CBAM]
    nl: Optional[NonLocal3d]

    def __init__(self):
        super().__init__()
        self.cbam = None
        self.nl = None
        self.downsample: Optional[nn.Module] = None
        self.relu = nn.ReLU(inplace=True)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.cbam is not None:
            out = self.cbam(out)
        out = self.relu(out + (x if self.downsample is None else self.downsample(x)))
        return out if self.nl is None else self.nl(out)


class BasicBlock(_ResBlock):
    """``(kt, 3, 3)`` conv (stride (1, s, s)) -> BN -> ReLU -> ``(1, 3, 3)`` conv -> BN (PySlowFast BasicTransform)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, temporal_kernel: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv3d(
            in_channels,
            width,
            (temporal_kernel, 3, 3),
            stride=(1, stride, stride),
            padding=(temporal_kernel // 2, 1, 1),
            bias=False,
        )
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, out_channels, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        return self.bn2

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_ResBlock):
    """``(kt, 1, 1)`` -> ``(1, 3, 3)`` stride (1, s, s) -> ``1x1x1`` (x4 channels), BN after each."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, temporal_kernel: int, stride: int):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv3d(
            in_channels, width, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False
        )
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    @property
    def last_bn(self) -> nn.BatchNorm3d:
        return self.bn3

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


class Head(nn.Module):
    """``feat: (B, D) -> dropout -> proj -> (B, num_classes)`` logits (no softmax, also in eval)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.proj = nn.Linear(in_features, num_classes)
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.proj(self.dropout(feat))


class ResNet3D(nn.Module):
    """ResNet-3D video classifier. ``x: (B, 3, T, H, W) -> (B, num_classes)``.

    Args:
        depth: 18 | 34 (basic blocks) | 50 | 101 | 152 (bottlenecks).
        base_channels: stem / res2 width (64 standard).
        temporal: key of :data:`TEMPORAL_PATTERNS`.
        nonlocal_locations: per stage (res2..res5) the block indices followed by a non-local block.
        nonlocal_attention, nonlocal_window: the non-local blocks' kind and local window
            (:class:`~videoattn.models.nonlocal_block.NonLocal3d`).
        cbam_stages: stages (2..5) whose every block applies CBAM to its residual branch (after
            the branch's last BN, before the residual add, as in the CBAM paper's ResNets).
        cbam_form: which CBAM (variant, order, gates; see :mod:`videoattn.models.cbam`).
        zero_init_final_bn: each residual branch's last BN starts at 0 (PySlowFast) or at 1 (CBAM authors).
    """

    def __init__(
        self,
        depth: int = 50,
        base_channels: int = 64,
        temporal: str = "i3d",
        num_classes: int = 400,
        dropout: float = 0.5,
        nonlocal_locations: Sequence[Sequence[int]] = ((), (), (), ()),
        nonlocal_instantiation: str = "embedded_gaussian",
        nonlocal_subsample: Sequence[int] = (1, 2, 2),
        nonlocal_inter_ratio: float = 0.5,
        nonlocal_attention: str = "full",
        nonlocal_window: Sequence[int] = (8, 14, 14),
        cbam_stages: Sequence[int] = (),
        cbam_reduction: int = 16,
        cbam_kernel_size: int = 7,
        cbam_form: Optional[CBAMForm] = None,
        zero_init_final_bn: bool = True,
    ):
        super().__init__()
        if depth not in STAGE_DEPTHS:
            raise UsageError(f"unsupported ResNet depth {depth}; choose one of {sorted(STAGE_DEPTHS)}")
        if temporal not in TEMPORAL_PATTERNS:
            raise UsageError(f"unknown temporal pattern '{temporal}'; choose one of {', '.join(TEMPORAL_PATTERNS)}")
        if len(nonlocal_locations) != 4:
            raise UsageError(f"model.non_local.locations needs one list per stage res2..res5, got {nonlocal_locations}")
        check_kind(nonlocal_attention, nonlocal_instantiation, nonlocal_window, nonlocal_subsample)
        bad = [s for s in cbam_stages if s not in (2, 3, 4, 5)]
        if bad:
            raise UsageError(f"model.cbam.stages must name stages 2..5, got {list(cbam_stages)}")
        pattern = TEMPORAL_PATTERNS[temporal]
        block = BasicBlock if depth < 50 else Bottleneck

        self.stem = Stem(3, base_channels, pattern["stem"])
        in_channels = base_channels
        for i, (name, n_blocks) in enumerate(zip(STAGES, STAGE_DEPTHS[depth])):
            basis, width = pattern["stages"][i], base_channels * 2**i
            nl_at = set(int(j) for j in nonlocal_locations[i])
            if any(j >= n_blocks or j < 0 for j in nl_at):
                raise UsageError(f"non-local location {sorted(nl_at)} out of range for {name} with {n_blocks} blocks")
            blocks: List[nn.Module] = []
            for j in range(n_blocks):
                b = block(in_channels, width, basis[j % len(basis)], stride=1 if (i == 0 or j > 0) else 2)
                in_channels = width * block.expansion
                if (i + 2) in cbam_stages:
                    b.cbam = CBAM(in_channels, cbam_reduction, cbam_kernel_size, cbam_form or CBAMForm())
                if j in nl_at:
                    b.nl = NonLocal3d(
                        in_channels,
                        int(in_channels * nonlocal_inter_ratio),
                        nonlocal_instantiation,
                        nonlocal_subsample,
                        attention=nonlocal_attention,
                        window=nonlocal_window,
                    )
                blocks.append(b)
            self.add_module(name, nn.Sequential(*blocks))
            if i == 0:
                p = pattern["pool1"]
                self.pool2 = nn.MaxPool3d((p, 1, 1), stride=(p, 1, 1)) if p > 1 else nn.Identity()
        self.feature_dim = in_channels
        self.head = Head(in_channels, num_classes, dropout)
        self._init_weights(zero_init_final_bn)

    def _init_weights(self, zero_init_final_bn: bool) -> None:
        """PySlowFast init: MSRA fan-out convs, BN (1, 0); with ``zero_init_final_bn`` (PySlowFast's
        RESNET.ZERO_INIT_FINAL_BN) the final BN of every residual branch starts at 0, so each block
        starts as the identity; without it, at 1 (the CBAM authors' ResNet init). The non-local
        block's output BN starts at 0 either way (PySlowFast's NONLOCAL.ZERO_INIT_FINAL_BN).

        3D layers only: CBAM's 2D conv, 2D BN and MLP keep the init their form gives them."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, _ResBlock) and zero_init_final_bn:
                nn.init.zeros_(m.last_bn.weight)
            elif isinstance(m, NonLocal3d):
                nn.init.zeros_(m.bn.weight)

    def forward_intermediates(self, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Feature maps after the stages named in ``layers`` (res2..res5; res2 is taken before the
        temporal pool); stops after the last one requested.

        ``x: (B, 3, T, H, W) -> {layer: (B, C_layer, T_layer, H_layer, W_layer)}``.
        """
        bad = [layer for layer in layers if layer not in STAGES]
        if bad or not layers:
            raise UsageError(f"unknown layer(s) {bad or list(layers)}; choose from {', '.join(STAGES)}")
        last = max(STAGES.index(layer) for layer in layers)
        out: Dict[str, torch.Tensor] = {}
        x = self.stem(x)
        for name in STAGES[: last + 1]:
            x = getattr(self, name)(x)
            if name in layers:
                out[name] = x
            if name == "res2":
                x = self.pool2(x)
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (after res5). ``x: (B, 3, T, H, W) -> (B, feature_dim, T', H', W')``."""
        return self.forward_intermediates(x, ["res5"])["res5"]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then dropout and the classifier.

        ``x: (B, feature_dim, T', H', W') -> (B, num_classes)`` logits, or the pooled embedding
        ``(B, feature_dim)`` with ``pre_logits=True``.
        """
        x = x.mean(dim=(2, 3, 4))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 3, T, H, W) -> (B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))


def reset_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace ``model.head.proj`` by a freshly initialised ``Linear(feature_dim, num_classes)``."""
    target = getattr(model, "module", model)
    old = target.head.proj
    target.head.proj = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    nn.init.normal_(target.head.proj.weight, std=0.01)
    nn.init.zeros_(target.head.proj.bias)
    return model
