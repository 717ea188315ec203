"""2D -> 3D inflation of torchvision ResNet weights (resnet18/34/50/101/152 layouts).

Module names of :class:`ResNet3D` mirror torchvision's (``conv1`` -> ``stem.conv``,
``layerK`` -> ``res{K+1}``, ``fc`` -> ``head.proj``), so every 2D kernel ``(O, I, h, w)`` is
placed into the 3D kernel ``(O, I, t, h, w)``:

* ``centre``: the 2D kernel at the central time tap, zeros elsewhere (a static clip gives
  the 2D response at every frame -- but so does any clip, frame by frame, for t = 1).
* ``mean``: the 2D kernel repeated over t and divided by t (I3D's inflation): on a static clip
  the response equals the 2D one wherever the temporal window is inside the clip.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch
from torch import nn

from videoattn.utils.state_dict import ConversionError

_RENAMES = [(r"^conv1\.", "stem.conv."), (r"^bn1\.", "stem.bn."), (r"^fc\.", "head.proj.")]


def torchvision_key(key: str) -> str:
    """Map a torchvision ResNet state-dict key to this package's name."""
    for pattern, repl in _RENAMES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    m = re.match(r"^layer(\d)\.(.*)$", key)
    if m:
        return f"res{int(m.group(1)) + 1}.{m.group(2)}"
    return key


def inflate_kernel(w2d: torch.Tensor, t: int, mode: str = "mean") -> torch.Tensor:
    """``(O, I, h, w) -> (O, I, t, h, w)`` by ``mode`` ("mean" or "centre")."""
    if mode == "mean":
        return w2d.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
    if mode in ("centre", "center"):
        w3d = w2d.new_zeros(w2d.shape[:2] + (t,) + w2d.shape[2:])
        w3d[:, :, t // 2] = w2d
        return w3d
    raise ValueError(f"unknown inflation mode '{mode}'; use 'mean' or 'centre'")


def inflate_state_dict(
    state2d: Dict[str, torch.Tensor], model: nn.Module, mode: str = "mean"
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Inflate a torchvision ResNet state dict into ``model``'s key names and shapes.

    Returns ``(state3d, skipped)``: ``skipped`` lists 2D keys that have no counterpart or whose
    shape cannot fit (e.g. a 1000-class ``fc`` for a 400-class head), with the reason.
    Raises :class:`ConversionError` if the layouts are incompatible (different depth or width).
    """
    target = model.state_dict()
    out: Dict[str, torch.Tensor] = {}
    skipped: List[str] = []
    for key, value in state2d.items():
        name = torchvision_key(key)
        if name not in target:
            skipped.append(f"{key}: no counterpart ({name})")
            continue
        want = target[name]
        if value.dim() == 4 and want.dim() == 5:
            value = inflate_kernel(value, want.shape[2], mode)
        if value.shape != want.shape:
            if name.startswith("head."):
                skipped.append(f"{key}: shape {tuple(value.shape)} != {tuple(want.shape)} (head left as initialised)")
                continue
            raise ConversionError(
                f"cannot inflate {key} {tuple(value.shape)} into {name} {tuple(want.shape)}: "
                "does the config's depth/base_channels match the 2D network?"
            )
        out[name] = value.to(want.dtype)
    missing_backbone = [k for k in target if k not in out and not _is_extra(k)]
    if missing_backbone:
        raise ConversionError(f"2D state dict lacks {len(missing_backbone)} backbone keys, e.g. {missing_backbone[:3]}")
    return out, skipped


def _is_extra(key: str) -> bool:
    """Keys that exist only in the 3D model (non-local, CBAM) or the head."""
    return ".nl." in key or ".cbam." in key or key.startswith("head.")
