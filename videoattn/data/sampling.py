"""Temporal sampling: which frame indices of a video make a clip.

``sampling_rate`` counts frames at ``target_fps`` (PySlowFast: 30), so a clip always spans the same
time whatever the video's own frame rate: ``num_frames`` samples ``sampling_rate / target_fps``
seconds apart. Videos shorter than a clip repeat their last frame (indices are clamped to the last
frame; no looping), as PySlowFast's ``temporal_sampling`` does.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def clip_span(num_frames: int, sampling_rate: int, video_fps: float, target_fps: float) -> float:
    """Length of a clip in the video's own frames: first to last sample, inclusive."""
    step = sampling_rate * video_fps / target_fps
    return (num_frames - 1) * step + 1


def clip_indices(video_frames: int, video_fps: float, num_frames: int, sampling_rate: int,
                 target_fps: float, clip_index: int = -1, num_clips: int = 1,
                 rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Frame indices (int64, length ``num_frames``) of one clip, clamped to ``[0, video_frames - 1]``.

    Args:
        video_frames / video_fps: the video's frame count and frame rate.
        clip_index: -1 = a random start (training, drawn from ``rng``); otherwise clip
            ``clip_index`` of ``num_clips`` starts spaced uniformly from the first possible start
            to the last one (``num_clips == 1``: the centre clip).
    """
    if video_frames <= 0:
        raise ValueError("video has no frames")
    delta = max(video_frames - clip_span(num_frames, sampling_rate, video_fps, target_fps), 0.0)
    if clip_index < 0:
        start = (rng if rng is not None else np.random.default_rng()).uniform(0.0, delta)
    elif num_clips == 1:
        start = delta / 2
    else:
        start = delta * clip_index / (num_clips - 1)
    return np.clip(spaced_indices(start, video_fps, num_frames, sampling_rate, target_fps), 0, video_frames - 1)


def spaced_indices(start: float, video_fps: float, num_frames: int, sampling_rate: int,
                   target_fps: float) -> np.ndarray:
    """``num_frames`` frame indices from frame ``start``, ``sampling_rate`` frames at ``target_fps``
    apart (int64, not clamped to the video)."""
    step = sampling_rate * video_fps / target_fps
    return np.floor(start + step * np.arange(num_frames) + 1e-6).astype(np.int64)


def window_starts(video_frames: int, video_fps: float, num_frames: int, sampling_rate: int,
                  target_fps: float, stride_frames: int) -> np.ndarray:
    """Start frames of sliding windows with ``stride_frames`` counted at ``target_fps`` (for features)."""
    stride = max(stride_frames, 1) * video_fps / target_fps
    span = clip_span(num_frames, sampling_rate, video_fps, target_fps)
    count = max(int(math.floor((video_frames - span) / stride)) + 1, 1)
    return np.floor(np.arange(count) * stride + 1e-6).astype(np.int64)
