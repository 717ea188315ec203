"""Spatial transforms of uint8 video tensors (torchvision.transforms.v2 functional ops).

Input frames: uint8 ``(T, H, W, 3)`` (as decoded). Output clips: float32 ``(3, T, H, W)``
normalised with ``cfg.data.mean`` / ``cfg.data.std``.

* train: random short side in ``data.train_jitter_scales`` ([min, max], PySlowFast
  ``random_short_side_scale_jitter``), random ``train_crop_size`` crop, horizontal flip if
  ``data.random_flip``.
* val: short side to ``test_crop_size``, centre crop (PySlowFast's validation).
* test: short side to ``test_crop_size``, then 1 crop (centre) or 3 crops along the long side
  (left/centre/right, or top/centre/bottom for portrait videos).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from einops import rearrange
from torchvision.transforms.v2 import functional as F


def _to_tchw(frames) -> torch.Tensor:
    """uint8 (T, H, W, 3) tensor/array -> uint8 (T, 3, H, W)."""
    frames = torch.as_tensor(frames)
    return rearrange(frames, "t h w c -> t c h w")  # a channels-last view: resizes fastest, no copy


def _finish(video: torch.Tensor, cfg) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> normalised float32 (3, T, H, W)."""
    video = F.to_dtype(video.contiguous(), torch.float32, scale=True)  # channels-first: faster float ops
    video = F.normalize(video, mean=list(cfg.data.mean), std=list(cfg.data.std))
    return rearrange(video, "t c h w -> c t h w").contiguous()


def _short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    return F.resize(video, [size], antialias=True)


def train_clip(frames, cfg, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Training augmentation of one clip: (T, H, W, 3) uint8 -> (3, T, crop, crop) float32."""
    video = _to_tchw(frames)
    lo, hi = (int(s) for s in cfg.data.train_jitter_scales)
    scale = int(torch.randint(lo, hi + 1, (1,), generator=generator))
    video = _short_side(video, scale)
    crop = int(cfg.data.train_crop_size)
    h, w = video.shape[-2:]
    if h < crop or w < crop:  # jitter scale smaller than the crop: PySlowFast would fail; pad-free fix
        video = _short_side(video, crop)
        h, w = video.shape[-2:]
    top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
    video = F.crop(video, top, left, crop, crop)
    if cfg.data.random_flip and float(torch.rand(1, generator=generator)) < 0.5:
        video = F.horizontal_flip(video)
    return _finish(video, cfg)


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


def test_views(frames, cfg, num_crops: Optional[int] = None) -> List[torch.Tensor]:
    """Test-time views of one clip: (T, H, W, 3) uint8 -> list of (3, T, S, S) float32, S = test_crop_size.

    ``num_crops`` defaults to ``cfg.test.num_spatial_crops``; crops are in order first/centre/last.
    """
    num_crops = int(cfg.test.num_spatial_crops if num_crops is None else num_crops)
    video = resize_for_test(frames, cfg)
    return [test_crop(video, cfg, i, num_crops) for i in range(num_crops)]


def resize_for_test(frames, cfg) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H', W') uint8 with short side ``test_crop_size``."""
    return _short_side(_to_tchw(frames), int(cfg.data.test_crop_size))


def test_crop(video: torch.Tensor, cfg, crop_index: int, num_crops: int) -> torch.Tensor:
    """Crop ``crop_index`` of ``num_crops`` of a :func:`resize_for_test` output -> (3, T, S, S) float32."""
    size = int(cfg.data.test_crop_size)
    h, w = video.shape[-2:]
    top, left = crop_offsets(h, w, size, num_crops)[crop_index]
    return _finish(F.crop(video, top, left, size, size), cfg)


def val_clip(frames, cfg) -> torch.Tensor:
    """Validation view: short side to test_crop_size, centre crop -> (3, T, S, S) float32."""
    return test_views(frames, cfg, num_crops=1)[0]


# Names start with "test_": keep pytest from collecting them when a test module imports them.
test_views.__test__ = False  # type: ignore[attr-defined]
test_crop.__test__ = False  # type: ignore[attr-defined]
