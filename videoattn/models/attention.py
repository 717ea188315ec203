"""Capture CBAM spatial maps, CBAM channel weights and non-local attention rows during a forward pass.

    with capture_attention(model, queries=[(0.5, 0.5, 0.5)]) as maps:
        logits = model(clip)
    maps["res3.1.cbam"]      # (B, T, H, W) spatial attention in [0, 1]
    maps["res3.1.nonlocal"]  # (B, Q, T', H', W') weights of each query over the key positions

    with capture_channels(model, outputs=["res3.1.cbam"]) as channels:
        logits = model(clip)
    channels["res3.1.cbam"].weights  # (B, C, T) channel weights in (0, 1); None without a channel gate
    channels["res3.1.cbam"].output   # (B, C, T, H, W) the CBAM output (gated branch, before the residual add)

Forward hooks only read activations, so outputs are unchanged; the non-local rows are
recomputed for the requested queries alone (Q x M, never the full matrix). If the model runs
several times inside the block, the maps of the last call are kept. :func:`zero_channels` is the
one hook here that changes outputs: it zeroes chosen channels of one CBAM block's output.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

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

            if module.spatial is not None:  # None: a CBAM without a spatial gate
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


def cbam_blocks(model: nn.Module) -> Dict[str, CBAM]:
    """``{key: module}`` of every CBAM block of ``model``, keys as in :func:`capture_attention` (``res3.1.cbam``)."""
    return {strip_wrapper_prefixes(n): m for n, m in model.named_modules() if isinstance(m, CBAM)}


@dataclass
class ChannelCapture:
    """What :func:`capture_channels` recorded for one CBAM block (from the last forward pass)."""

    weights: Optional[torch.Tensor] = None  # (B, C, T) channel weights in (0, 1); None: no channel gate
    output: Optional[torch.Tensor] = None  # (B, C, T, H, W) CBAM output, only for the blocks asked for


@contextlib.contextmanager
def capture_channels(model: nn.Module, outputs: Sequence[str] = ()) -> Iterator[Dict[str, ChannelCapture]]:
    """Yield ``{key: ChannelCapture}`` for every CBAM block, filled by the next forward pass(es).

    ``weights``: what ``cbam.channel`` returns, ``(B, C, T, 1, 1)`` squeezed to ``(B, C, T)`` (the
    gate that scales each channel of each frame), whatever the block's order of gates; None when the
    block has no channel gate (``cbam.channel is None``). ``output``: the whole block's output, for
    the keys in ``outputs`` only (a copy of an activation map costs memory). Read-only hooks.
    """
    blocks = cbam_blocks(model)
    found: Dict[str, ChannelCapture] = {key: ChannelCapture() for key in blocks}
    handles = []
    for key, block in blocks.items():
        if block.channel is not None:

            def weight_hook(_m, _inp, out, key=key):
                found[key].weights = out.detach().flatten(2)

            handles.append(block.channel.register_forward_hook(weight_hook))
        if key in outputs:

            def output_hook(_m, _inp, out, key=key):
                found[key].output = out.detach()

            handles.append(block.register_forward_hook(output_hook))
    try:
        yield found
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def zero_channels(model: nn.Module, key: str, drop: List[Sequence[int]]) -> Iterator[None]:
    """While open, batch element ``i`` of CBAM block ``key``'s output has channels ``drop[i]``
    zeroed (before the block's residual add); the batch must hold ``len(drop)`` elements."""
    block = cbam_blocks(model)[key]

    def hook(_m, _inp, out):
        if out.shape[0] != len(drop):
            raise ValueError(f"zero_channels: batch of {out.shape[0]} for {len(drop)} channel sets")
        keep = torch.ones(out.shape[:2], dtype=out.dtype, device=out.device)
        for i, channels in enumerate(drop):
            keep[i, list(channels)] = 0
        return out * keep[:, :, None, None, None]

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
