"""Resizes and crops as PySlowFast and mmaction2 do them (evaluation protocols).

Sizes and boxes are pure integer functions; the tensor functions take a video ``(T, 3, H, W)``
(uint8 or float) and return the same dtype. Each names the reference it reproduces; the tests in
``tests/data/test_protocol_spatial.py`` compare boxes and pixels with the references' own code.

PySlowFast (``slowfast/datasets/transform.py``, ``utils.spatial_sampling``, ``kinetics.py``; the
same formulas in pyslowfast 1.0 and at HEAD):

* ``random_short_side_scale_jitter``: short side ``s = int(round(uniform(min, max)))``, long side
  ``floor(long / short * s)``, nothing done when the short side already is ``s``; plain bilinear
  (``align_corners=False``, no antialiasing).
* ``random_crop``: offsets ``randint(0, H - S)`` / ``randint(0, W - S)`` (upper bound excluded, so
  never the last position), drawn only along a side longer than ``S``; ``horizontal_flip(0.5)``.
* ``uniform_crop``: centre offset ``ceil((H - S) / 2)``; index 0 / 1 / 2 = left / centre / right
  (top / centre / bottom when ``H > W``).
* Kinetics test: 3 crops -> short side ``TEST_CROP_SIZE`` and crops 0, 1, 2; 1 crop -> short side
  ``TRAIN_JITTER_SCALES[0]`` and the centre crop (index 1), both ``TEST_CROP_SIZE`` square.
  (PySlowFast's default ``torchvision`` decoding backend has FFmpeg's scaler resize the frames to
  short side ``min_scale`` while decoding, train and test; this follows its ``pyav`` path and
  its transform functions, which resize with the bilinear above.)

mmaction2 (``mmaction/datasets/transforms/processing.py``, ``mmcv.rescale_size``): ``Resize((-1,
S))`` keeps the ratio with ``int(side * S / short + 0.5)`` (bilinear ``cv2.resize``);
``CenterCrop`` offset ``(H - S) // 2``; ``ThreeCrop`` along the long side, in the order left,
RIGHT, centre (top, bottom, centre for portrait) with the far crop at ``2 * ((W - S) // 2)``.

Random draws: ``rng`` needs ``uniform(low, high)`` and an integer draw with the upper bound
excluded: numpy ``RandomState.randint`` (``np.random.RandomState(s)`` replays PySlowFast's
``np.random.seed(s)`` draws), numpy ``Generator.integers`` or ``random.Random.randrange``.
"""
from __future__ import annotations

import math
import random
from typing import List, Tuple

import torch


def _randint(rng, low: int, high: int) -> int:
    """An int in ``[low, high)`` drawn from ``rng`` (see the module docstring)."""
    if isinstance(rng, random.Random):
        return rng.randrange(low, high)
    if hasattr(rng, "integers"):
        return int(rng.integers(low, high))
    return int(rng.randint(low, high))


def resize(video: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Plain bilinear (``align_corners=False``, no antialiasing) to ``size = (h, w)``:
    (T, 3, H, W) -> (T, 3, h, w). A uint8 video is resized by torch's uint8 kernel (two
    separable passes, each rounded to uint8: within ~1 level of the float result).

    The same call as torchvision's ``resize`` makes on x86-64 (AVX2) and ARM CPUs, bit for bit
    (tests/data/test_protocol_spatial.py); torchvision is not imported: ~1 s in every process."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    frames = video.reshape(-1, *video.shape[-3:])
    out = torch.nn.functional.interpolate(frames, size=list(size), mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(*video.shape[:-2], *size)


def crop(video: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """The ``size x size`` window at (top, left): (..., H, W) -> (..., size, size), a view."""
    h, w = video.shape[-2:]
    if top < 0 or left < 0 or top + size > h or left + size > w:
        raise ValueError(f"a {size}x{size} crop at ({top}, {left}) does not fit a {h}x{w} frame")
    return video[..., top:top + size, left:left + size]


# ------------------------------------------------------------------------------------ PySlowFast
def pyslowfast_scaled_size(h: int, w: int, size: int) -> Tuple[int, int]:
    """(h, w) after ``random_short_side_scale_jitter`` chose short side ``size``."""
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        return int(math.floor((float(h) / w) * size)), size
    return size, int(math.floor((float(w) / h) * size))


def pyslowfast_uniform_crop_box(h: int, w: int, size: int, spatial_idx: int) -> Tuple[int, int]:
    """(top, left) of ``uniform_crop`` index 0 / 1 / 2 (left / centre / right, or top / centre /
    bottom when ``h > w``); the centre offset rounds up."""
    if spatial_idx not in (0, 1, 2):
        raise ValueError(f"spatial index must be 0, 1 or 2, got {spatial_idx}")
    top, left = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    if h > w:
        top = {0: 0, 1: top, 2: h - size}[spatial_idx]
    else:
        left = {0: 0, 1: left, 2: w - size}[spatial_idx]
    return top, left


def pyslowfast_test_scale(num_crops: int, test_crop_size: int, train_jitter_min: int) -> int:
    """Short side before the test crops (PySlowFast ``Kinetics.__getitem__``, test mode): 3 crops
    -> ``TEST_CROP_SIZE``, 1 crop -> ``TRAIN_JITTER_SCALES[0]``."""
    return int(test_crop_size) if num_crops > 1 else int(train_jitter_min)


def pyslowfast_spatial_index(crop_index: int, num_crops: int) -> int:
    """``uniform_crop`` index of crop ``crop_index`` of ``num_crops`` (Kinetics: the centre, 1,
    for a single crop; else the crop index itself, at most 3 crops)."""
    if not 1 <= num_crops <= 3 or not 0 <= crop_index < num_crops:
        raise ValueError(f"crop {crop_index} of {num_crops}: PySlowFast has 1 to 3 spatial crops")
    return crop_index if num_crops > 1 else 1


def pyslowfast_random_crop_box(h: int, w: int, size: int, rng) -> Tuple[int, int]:
    """(top, left) of ``random_crop``, drawing as it does (nothing when the frame is the crop)."""
    if h < size or w < size:
        raise ValueError(f"a {size}x{size} crop does not fit a {h}x{w} frame (PySlowFast would return a "
                         f"smaller crop): raise train_jitter_scales[0] to at least train_crop_size")
    if h == size and w == size:
        return 0, 0
    top = _randint(rng, 0, h - size) if h > size else 0
    left = _randint(rng, 0, w - size) if w > size else 0
    return top, left


def pyslowfast_train_view(video: torch.Tensor, min_scale: int, max_scale: int, crop_size: int,
                          random_flip: bool, rng) -> torch.Tensor:
    """``spatial_sampling(spatial_idx=-1)``: short-side jitter, random crop, flip with p=0.5 (if
    ``random_flip``): (T, 3, H, W) -> (T, 3, crop_size, crop_size). Draws from ``rng`` in
    PySlowFast's order: scale, top, left, flip."""
    scale = int(round(rng.uniform(min_scale, max_scale)))
    h, w = video.shape[-2:]
    video = resize(video, pyslowfast_scaled_size(h, w, scale))
    top, left = pyslowfast_random_crop_box(*video.shape[-2:], crop_size, rng)
    video = crop(video, top, left, crop_size)
    if random_flip and rng.uniform(0.0, 1.0) < 0.5:
        video = video.flip(-1)
    return video


def pyslowfast_test_resize(video: torch.Tensor, scale: int) -> torch.Tensor:
    """Short side to ``scale`` (``random_short_side_scale_jitter`` with min = max = scale)."""
    return resize(video, pyslowfast_scaled_size(*video.shape[-2:], scale))


def pyslowfast_test_crop(video: torch.Tensor, crop_index: int, num_crops: int, crop_size: int) -> torch.Tensor:
    """Crop ``crop_index`` of ``num_crops`` of a :func:`pyslowfast_test_resize` output."""
    idx = pyslowfast_spatial_index(crop_index, num_crops)
    return crop(video, *pyslowfast_uniform_crop_box(*video.shape[-2:], crop_size, idx), crop_size)


# -------------------------------------------------------------------------------------- mmaction2
def mmaction_scaled_size(h: int, w: int, short: int) -> Tuple[int, int]:
    """(h, w) after ``Resize(scale=(-1, short))`` (``mmcv.rescale_size`` keeps the ratio; each side
    ``int(side * factor + 0.5)`` with ``factor = short / min(h, w)``)."""
    factor = min(math.inf / max(h, w), short / min(h, w))
    return int(h * float(factor) + 0.5), int(w * float(factor) + 0.5)


def mmaction_center_crop_box(h: int, w: int, size: int) -> Tuple[int, int]:
    """(top, left) of ``CenterCrop(size)``: offsets round down."""
    return (h - size) // 2, (w - size) // 2


def mmaction_three_crop_boxes(h: int, w: int, size: int) -> List[Tuple[int, int]]:
    """(top, left) of ``ThreeCrop(size)`` in its order: left, right, centre (when the crop spans
    the height), else top, bottom, centre (when it spans the width)."""
    if size == h and size <= w:
        step = (w - size) // 2
        return [(0, 0), (0, 2 * step), (0, step)]
    if size == w and size <= h:
        step = (h - size) // 2
        return [(0, 0), (2 * step, 0), (step, 0)]
    raise ValueError(f"ThreeCrop({size}) needs the crop to span the height or the width of a {h}x{w} frame")


def mmaction_crop_boxes(h: int, w: int, size: int, num_crops: int) -> List[Tuple[int, int]]:
    """Boxes of 1 (``CenterCrop``) or 3 (``ThreeCrop``) crops, in mmaction2's order."""
    if num_crops == 1:
        return [mmaction_center_crop_box(h, w, size)]
    if num_crops == 3:
        return mmaction_three_crop_boxes(h, w, size)
    raise ValueError(f"mmaction2's I3D pipeline has 1 (CenterCrop) or 3 (ThreeCrop) crops, got {num_crops}")


def mmaction_test_resize(video: torch.Tensor, short: int) -> torch.Tensor:
    """``Resize(scale=(-1, short))`` (bilinear): (T, 3, H, W) -> (T, 3, H', W')."""
    return resize(video, mmaction_scaled_size(*video.shape[-2:], short))


def mmaction_test_crop(video: torch.Tensor, crop_index: int, num_crops: int, crop_size: int) -> torch.Tensor:
    """Crop ``crop_index`` of ``num_crops`` of a :func:`mmaction_test_resize` output."""
    boxes = mmaction_crop_boxes(*video.shape[-2:], crop_size, num_crops)
    return crop(video, *boxes[crop_index], crop_size)
