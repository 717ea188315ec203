"""Spatial transforms of uint8 video tensors (torchvision.transforms.v2 functional ops).

Input frames: uint8 ``(T, H, W, 3)`` (as decoded). Output clips: float32 ``(3, T, H, W)``
normalised with ``data.mean`` / ``data.std``. Every function takes the ``data`` config section
(:class:`~videoattn.config.DataConfig`).

* train: random short side in ``data.train_jitter_scales`` ([min, max], PySlowFast
  ``random_short_side_scale_jitter``), random ``train_crop_size`` crop, horizontal flip if
  ``data.random_flip``.
* val: short side to ``test_crop_size``, centre crop (PySlowFast's validation).
* test: short side to ``test_crop_size``, then 1 crop (centre) or 3 crops along the long side
  (left/centre/right, or top/centre/bottom for portrait videos).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from einops import rearrange
from torchvision.transforms.v2 import functional as F

from videoattn.config import DataConfig


def _to_tchw(frames) -> torch.Tensor:
    """uint8 (T, H, W, 3) tensor/array -> uint8 (T, 3, H, W)."""
    frames = torch.as_tensor(frames)
    return rearrange(frames, "t h w c -> t c h w")  # a channels-last view: resizes fastest, no copy


def _finish(video: torch.Tensor, data: DataConfig, normalize: bool = True) -> torch.Tensor:
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


def _short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    return F.resize(video, [size], antialias=True)


def _resized_size(h: int, w: int, short: int) -> tuple:
    """(h, w) after scaling the short side to ``short``, rounded as ``F.resize(video, [short])`` rounds."""
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def train_clip(frames, data: DataConfig, generator: Optional[torch.Generator] = None,
               normalize: bool = True) -> torch.Tensor:
    """Training augmentation of one clip: (T, H, W, 3) uint8 -> (3, T, crop, crop) float32
    (uint8 if not ``normalize``).

    Random short side ``s`` in ``train_jitter_scales``, random ``crop x crop`` window of the video
    resized to that short side, optional horizontal flip. The window is cut from the source frames
    first and only it is resized (``F.resized_crop``): the same picture as resizing the whole
    frame and cropping (up to one source pixel of rounding at the window's edges), for a fraction
    of the resampling work.
    """
    video = _to_tchw(frames)
    h, w = video.shape[-2:]
    lo, hi = data.train_jitter_scales
    crop = data.train_crop_size
    scale = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    rh, rw = _resized_size(h, w, scale)
    if rh < crop or rw < crop:  # jitter scale smaller than the crop: PySlowFast would fail; pad-free fix
        rh, rw = _resized_size(h, w, crop)
    top = int(torch.randint(0, rh - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, rw - crop + 1, (1,), generator=generator))
    sy, sx = h / rh, w / rw  # source pixels per resized pixel
    y0, x0 = round(top * sy), round(left * sx)
    y1, x1 = min(h, max(y0 + 1, round((top + crop) * sy))), min(w, max(x0 + 1, round((left + crop) * sx)))
    video = F.resized_crop(video, y0, x0, y1 - y0, x1 - x0, [crop, crop], antialias=True)
    if data.random_flip and float(torch.rand(1, generator=generator)) < 0.5:
        video = F.horizontal_flip(video)
    return _finish(video, data, normalize)


def crop_offsets(h: int, w: int, crop: int, num_crops: int) -> List[tuple]:
    """(top, left) of each spatial crop: centre, or 3 along the long side (first, centre, last)."""
    centre = ((h - crop) // 2, (w - crop) // 2)
    if num_crops == 1:
        return [centre]
    if num_crops != 3:
        raise ValueError(f"num_spatial_crops must be 1 or 3, got {num_crops}")
    if h > w:  # portrait: top / centre / bottom
        return [(0, centre[1]), centre, (h - crop, centre[1])]
    return [(centre[0], 0), centre, (centre[0], w - crop)]


def test_views(frames, data: DataConfig, num_crops: int) -> List[torch.Tensor]:
    """Test-time views of one clip: (T, H, W, 3) uint8 -> ``num_crops`` x (3, T, S, S) float32,
    S = ``data.test_crop_size``; crops in order first/centre/last."""
    video = resize_for_test(frames, data)
    return [test_crop(video, data, i, num_crops) for i in range(num_crops)]


def resize_for_test(frames, data: DataConfig) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H', W') uint8 with short side ``test_crop_size``."""
    return _short_side(_to_tchw(frames), data.test_crop_size)


def test_crop(video: torch.Tensor, data: DataConfig, crop_index: int, num_crops: int, normalize: bool = True) -> torch.Tensor:
    """Crop ``crop_index`` of ``num_crops`` of a :func:`resize_for_test` output -> (3, T, S, S) float32
    (uint8 if not ``normalize``)."""
    size = data.test_crop_size
    h, w = video.shape[-2:]
    top, left = crop_offsets(h, w, size, num_crops)[crop_index]
    return _finish(F.crop(video, top, left, size, size), data, normalize)


def val_clip(frames, data: DataConfig, normalize: bool = True) -> torch.Tensor:
    """Validation view: short side to test_crop_size, centre crop -> (3, T, S, S) float32 (uint8 if not ``normalize``)."""
    return test_crop(resize_for_test(frames, data), data, 0, 1, normalize)


# Names start with "test_": keep pytest from collecting them when a test module imports them.
test_views.__test__ = False  # type: ignore[attr-defined]
test_crop.__test__ = False  # type: ignore[attr-defined]
