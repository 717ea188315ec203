"""From decoded frames to model input: layouts, normalisation (in the workers or on the device).

Decoded frames are uint8 ``(T, H, W, 3)``; the resizes and crops work on ``(T, 3, H, W)`` (which
ones: :mod:`videoattn.data.protocols`); clips are float32 ``(3, T, H, W)`` normalised with
``data.mean`` / ``data.std`` on 0-1 RGB (PySlowFast's, 0.45 / 0.225 by default).
"""
from __future__ import annotations

from typing import Sequence

import torch
from einops import rearrange

from videoattn.config import DataConfig


def to_tchw(frames) -> torch.Tensor:
    """uint8 (T, H, W, 3) tensor/array -> uint8 (T, 3, H, W)."""
    frames = torch.as_tensor(frames)
    return rearrange(frames, "t h w c -> t c h w")  # a channels-last view: resizes fastest, no copy


def to_clip(video: torch.Tensor, data: DataConfig, normalize: bool = True) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> normalised float32 (3, T, H, W), written into one new buffer
    (``normalize=False``: uint8 (3, T, H, W), normalised later by :class:`DeviceNormalizer`).

    One float allocation per clip, not one per step: a fresh multi-MB buffer per op costs more in
    page faults than the arithmetic.
    """
    if not normalize:  # a view: the loader's collate writes it into the batch in one pass
        return rearrange(video, "t c h w -> c t h w")
    out = torch.empty((video.shape[1], video.shape[0], *video.shape[2:]), dtype=torch.float32)
    out.copy_(rearrange(video, "t c h w -> c t h w"))  # uint8 -> float, and the layout, in one pass
    mean, std = _mean_std_255(data.mean, data.std, out.device)
    return out.sub_(mean).div_(std)


def _mean_std_255(mean: Sequence[float], std: Sequence[float], device) -> tuple:
    """``mean`` / ``std`` on the 0-255 scale, shaped (3, 1, 1, 1): broadcast over (..., 3, T, H, W)."""
    m = torch.tensor(list(mean), dtype=torch.float32).mul_(255.0).view(-1, 1, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).mul_(255.0).view(-1, 1, 1, 1)
    return m.to(device), s.to(device)


class DeviceNormalizer:
    """Moves batch clips ``(B, 3, T, H, W)`` to a device as normalised float32.

    uint8 clips (``data.normalize_on_device``: the workers send 4x fewer bytes) are normalised on
    the device, as mmaction2's data preprocessor does; float clips were normalised by the workers
    and only move. The mean/std tensors are made once per device, not per batch. With
    ``channels_last`` the result is in ``torch.channels_last_3d`` (``model.channels_last``).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        self.mean, self.std = list(mean), list(std)
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self._cache: dict = {}

    def __call__(self, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
        clips = clips.to(device, non_blocking=True)
        if clips.dtype == torch.uint8:
            if clips.device not in self._cache:
                self._cache[clips.device] = _mean_std_255(self.mean, self.std, clips.device)
            mean, std = self._cache[clips.device]
            clips = clips.float().sub_(mean).div_(std)
        return clips.contiguous(memory_format=self.memory_format)
