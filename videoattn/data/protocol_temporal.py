"""Which frames make a clip, as PySlowFast and mmaction2 choose them (evaluation protocols).

Pure functions of frame counts, frame rates and a random source; they return int64 frame indices
of the video (``(T,)`` for one clip). Each names the reference code it reproduces; the tests in
``tests/data/test_protocol_temporal.py`` compare them with that code (PyPI ``pyslowfast==1.0``,
``mmaction2==1.2.0``), not with a port of it.

PySlowFast (``slowfast/datasets/decoder.py``: ``get_start_end_idx``, ``temporal_sampling``; the
same formulas at HEAD, commit 287ec00 of 2026-03, as in pyslowfast 1.0):

* a clip is a window of ``clip_size = sampling_rate * num_frames / target_fps * video_fps`` frames
  (at least 1), i.e. ``num_frames x sampling_rate`` frames at ``target_fps``;
* its start is ``uniform(0, delta)`` for training and validation (``delta = max(video_frames -
  clip_size, 0)``), ``delta * i / N`` for test view ``i`` of ``N`` (so one view is the first clip
  and the last ``delta / N`` frames are never a start);
* its ``num_frames`` indices are ``torch.linspace(start, start + clip_size - 1, num_frames)``
  (float32), clamped to the video and truncated: for 8x8 at 30 fps a step of 9 frames, not 8;
  a video shorter than a clip repeats its last frame.

This is PySlowFast's arithmetic on the whole decoded video (its path when the container gives no
duration, e.g. WebM). When it can seek (MP4 with a duration), PySlowFast decodes only the frames
whose pts lies in ``[int(start * timebase), int(end * timebase)]`` and samples from the first of
them, which can move a clip by one frame from this formula (measured in the tests).

mmaction2 (``mmaction/datasets/transforms/loading.py`` ``SampleFrames``, 3D models, ``test_mode``
as in its I3D configs' val/test pipelines): ``frame_interval`` counts the video's own frames (no
frame-rate conversion); clip offsets ``round(i * max_offset / (N - 1))`` (numpy's round half to
even), one clip at ``max_offset // 2``; indices ``offset + j * frame_interval``, wrapped around
(``out_of_bound_opt='loop'``, its default) or repeating the last frame (``'repeat_last'``).

videoattn (this project's own convention, no reference): samples ``sampling_rate * fps /
target_fps`` frames apart (``floor``), test views spread from the first to the last possible start
(``delta * i / (N - 1)``) so together they cover the whole video, one view = the centre clip; a
video shorter than a clip repeats its last frame.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch


def _uniform(rng, high: float) -> float:
    """``rng.uniform(0, high)``; ``rng`` may be a ``random.Random`` (PySlowFast draws with Python's
    ``random.uniform``), a numpy ``Generator`` or ``RandomState``; None: a fresh numpy generator."""
    return float((rng if rng is not None else np.random.default_rng()).uniform(0, high))


def pyslowfast_clip_size(num_frames: int, sampling_rate: int, video_fps: float, target_fps: float) -> float:
    """Window length in the video's frames: ``num_frames x sampling_rate`` frames at ``target_fps``
    (PySlowFast ``decoder.decode``: ``max(1, sampling_rate * num_frames / target_fps * fps)``)."""
    return max(1.0, sampling_rate * num_frames / target_fps * video_fps)


def pyslowfast_start(video_frames: int, clip_size: float, view: int, num_views: int, rng=None) -> float:
    """First frame (fractional) of a clip: PySlowFast ``get_start_end_idx`` (``use_offset=False``).

    Args:
        view: -1 = random (train and val: ``rng.uniform(0, delta)``); else test view ``view`` of
            ``num_views``, starting at ``delta * view / num_views``.
        rng: anything with ``uniform(low, high)``; a ``random.Random`` seeded like Python's
            ``random`` gives PySlowFast's own draw.
    """
    delta = max(video_frames - clip_size, 0)
    if view == -1:
        return _uniform(rng, delta)
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} is not in [0, {num_views})")
    return delta * view / num_views


def pyslowfast_centre_start(video_frames: int, clip_size: float) -> int:
    """The centre clip's start, ``floor(delta / 2)``: PySlowFast's single-clip rule under
    ``DATA.USE_OFFSET_SAMPLING`` (HEAD ``get_start_end_idx``; not in pyslowfast 1.0). Used for
    the deterministic ``centre`` validation view, which PySlowFast itself does not have."""
    return math.floor(max(video_frames - clip_size, 0) / 2)


def linspace_indices(start: float, clip_size: float, num_frames: int, video_frames: Optional[int]) -> np.ndarray:
    """PySlowFast ``temporal_sampling``: ``linspace(start, start + clip_size - 1, num_frames)`` in
    float32, clamped to ``[0, video_frames - 1]`` (None: not clamped), truncated -> int64 ``(num_frames,)``."""
    index = torch.linspace(start, start + clip_size - 1, num_frames, dtype=torch.float32)
    if video_frames is not None:
        index = torch.clamp(index, 0, video_frames - 1)
    return index.long().numpy()


def pyslowfast_clip_indices(video_frames: int, video_fps: float, num_frames: int, sampling_rate: int,
                            target_fps: float, view: int = -1, num_views: int = 1, rng=None) -> np.ndarray:
    """Frame indices (int64 ``(num_frames,)``) of PySlowFast's clip ``view`` of ``num_views``
    (-1: random, drawn from ``rng`` as :func:`pyslowfast_start` says)."""
    if video_frames <= 0:
        raise ValueError("video has no frames")
    size = pyslowfast_clip_size(num_frames, sampling_rate, video_fps, target_fps)
    start = pyslowfast_start(video_frames, size, view, num_views, rng)
    return linspace_indices(start, size, num_frames, video_frames)


def mmaction_test_offsets(video_frames: int, clip_len: int, frame_interval: int, num_clips: int) -> np.ndarray:
    """First frames of the ``num_clips`` test clips: mmaction2 ``SampleFrames._get_test_clips``
    (``twice_sample=False``, ``target_fps=None``) -> float64 ``(num_clips,)``."""
    if clip_len == 1:  # 2D recognisers: the centres of num_clips equal segments
        avg = video_frames / float(num_clips)
        return np.arange(num_clips) * avg + avg / 2.0
    max_offset = max(video_frames - ((clip_len - 1) * frame_interval + 1), 0)
    if num_clips > 1:
        return np.round(np.arange(num_clips) * (max_offset / float(num_clips - 1)))
    return np.array([max_offset // 2], dtype=np.float64)


def mmaction_clip_indices(video_frames: int, clip_len: int, frame_interval: int, view: int = 0,
                          num_clips: int = 1, out_of_bound: str = "loop") -> np.ndarray:
    """Frame indices (int64 ``(clip_len,)``) of test clip ``view`` of ``num_clips``: mmaction2
    ``SampleFrames(clip_len, frame_interval, num_clips, test_mode=True, out_of_bound_opt=...)``
    with ``start_index`` 0 (its ``VideoDataset``).

    ``out_of_bound``: ``"loop"`` wraps indices past the end (``i mod video_frames``; mmaction2's
    default), ``"repeat_last"`` repeats the clip's last frame inside the video.
    """
    if video_frames <= 0:
        raise ValueError("video has no frames")
    if not 0 <= view < num_clips:
        raise ValueError(f"view {view} is not in [0, {num_clips})")
    offset = mmaction_test_offsets(video_frames, clip_len, frame_interval, num_clips)[view]
    idx = offset + np.arange(clip_len) * frame_interval
    if out_of_bound == "loop":
        idx = np.mod(idx, video_frames)
    elif out_of_bound == "repeat_last":
        inside = idx < video_frames
        idx = np.where(inside, idx, np.max(idx * inside))
    else:
        raise ValueError(f"out_of_bound must be 'loop' or 'repeat_last', got {out_of_bound!r}")
    return idx.astype(np.int32).astype(np.int64)  # mmaction2 casts to int32 (truncating 2D offsets)


# ------------------------------------------------------------------------------------- videoattn
def videoattn_step(video_fps: float, sampling_rate: int, target_fps: float) -> float:
    """Distance between samples in the video's frames: ``sampling_rate`` frames at ``target_fps``."""
    return sampling_rate * video_fps / target_fps


def videoattn_spaced_indices(start: float, video_fps: float, num_frames: int, sampling_rate: int,
                             target_fps: float) -> np.ndarray:
    """``num_frames`` indices from frame ``start``, :func:`videoattn_step` apart (``floor``; int64,
    not clamped to the video)."""
    step = videoattn_step(video_fps, sampling_rate, target_fps)
    return np.floor(start + step * np.arange(num_frames) + 1e-6).astype(np.int64)


def videoattn_clip_indices(video_frames: int, video_fps: float, num_frames: int, sampling_rate: int,
                           target_fps: float, view: int = -1, num_views: int = 1, rng=None) -> np.ndarray:
    """Frame indices (int64 ``(num_frames,)``, clamped to the video) of this project's clip ``view``
    of ``num_views``: -1 = a random start (``rng.uniform``); else starts spread uniformly from the
    first possible start to the last one (``num_views == 1``: the centre clip)."""
    if video_frames <= 0:
        raise ValueError("video has no frames")
    span = (num_frames - 1) * videoattn_step(video_fps, sampling_rate, target_fps) + 1
    delta = max(video_frames - span, 0.0)
    if view == -1:
        start = _uniform(rng, delta)
    elif not 0 <= view < num_views:
        raise ValueError(f"view {view} is not in [0, {num_views})")
    else:
        start = delta / 2 if num_views == 1 else delta * view / (num_views - 1)
    idx = videoattn_spaced_indices(start, video_fps, num_frames, sampling_rate, target_fps)
    return np.clip(idx, 0, video_frames - 1)
