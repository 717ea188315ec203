"""Capture CBAM spatial maps and non-local attention rows during a forward pass.

    with capture_attention(model, queries=[(0.5, 0.5, 0.5)]) as maps:
        logits = model(clip)
    maps["res3.1.cbam"]      # (B, T, H, W) spatial attention in [0, 1]
    maps["res3.1.nonlocal"]  # (B, Q, T', H', W') weights of each query over the key positions

Forward hooks only read activations, so outputs are unchanged; the non-local rows are
recomputed for the requested queries alone (Q x M, never the full matrix). If the model runs
several times inside the block, the maps of the last call are kept.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Sequence, Tuple

import torch
from torch import nn

from videoattn.models.cbam import CBAM
from videoattn.models.nonlocal_block import NonLocal3d
from videoattn.utils.state_dict import strip_wrapper_prefixes


@contextlib.contextmanager
def capture_attention(
    model: nn.Module, queries: Sequence[Tuple[float, float, float]] = ()
) -> Iterator[Dict[str, torch.Tensor]]:
    """Yield a dict filled by the next forward pass(es) of ``model``.

    Args:
        model: a :class:`ResNet3D` (possibly DDP- or compile-wrapped).
        queries: non-local query positions ``(t, y, x)`` as fractions in [0, 1]; none -> no
            non-local maps are recorded.
    """
    maps: Dict[str, torch.Tensor] = {}
    handles = []
    queries = [tuple(float(c) for c in q) for q in queries]
    for raw_name, module in model.named_modules():
        name = strip_wrapper_prefixes(raw_name)
        if isinstance(module, CBAM) and module.spatial is not None:  # model.cbam.gates=channel: no map

            def cbam_hook(_m, _inp, out, key=f"{name}"):
                maps[key] = out[:, 0].detach()

            handles.append(module.spatial.register_forward_hook(cbam_hook))
        elif isinstance(module, NonLocal3d) and queries:
            key = name[: -len(".nl")] + ".nonlocal" if name.endswith(".nl") else name

            def nl_hook(m, inp, _out, key=key):
                with torch.no_grad():
                    maps[key] = m.attention(inp[0], queries).detach()

            handles.append(module.register_forward_hook(nl_hook))
    try:
        yield maps
    finally:
        for h in handles:
            h.remove()
