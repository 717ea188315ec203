"""The data side of feature extraction: sliding-window layout of a video and a stream of
decoded, transformed window batches (decoded in DataLoader workers while the model runs).

A window is a PySlowFast clip: ``data.num_frames`` samples ``data.sampling_rate / data.target_fps``
seconds apart; windows start every ``features.stride_seconds`` (or ``stride_frames`` at target fps).
Only a video genuinely shorter than one window gets a window that repeats its last frame (and
says so in ``Window.repeated``); a video cut short (it declares more frames than decode) gets
only the whole windows of the frames that really decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from videoattn.config import DataConfig, FeaturesConfig
from videoattn.data.decoding import DecodeError, TruncatedVideoError, config_backend, open_video
from videoattn.data.sampling import spaced_indices, window_starts
from videoattn.data.transforms import test_views


@dataclass(frozen=True)
class Window:
    """Sliding-window layout of one video, in seconds and native frame indices."""
    fps: float
    num_frames: int           # frames in the video
    window_s: float
    stride_s: float
    starts: List[float]
    indices: List[List[int]]  # (num_windows, T) native frame indices
    repeated: List[int] = field(default_factory=list)  # per window: samples past the end (repeat the last frame)

    @property
    def ends(self) -> List[float]:
        return [s + self.window_s for s in self.starts]


def window_layout(num_video_frames: int, fps: float, num_frames: int, sampling_rate: int, target_fps: float,
                  stride_s: float, whole_only: bool = False) -> Window:
    """Windows covering the video; at least one (a short video repeats its last frame), or with
    ``whole_only`` only windows of real frames (none for a video shorter than one window).

    Starts every ``stride_s`` seconds (:func:`videoattn.data.sampling.window_starts`); a window's
    ``num_frames`` samples are ``sampling_rate / target_fps`` s apart (as training clips) and its
    nominal length is ``window_s = num_frames * sampling_rate / target_fps``. The layout of fewer
    frames is a prefix of the layout of more (same starts, same indices).
    """
    if num_video_frames <= 0 or fps <= 0:
        raise ValueError(f"video has {num_video_frames} frames at {fps} fps")
    starts = window_starts(num_video_frames, fps, num_frames, sampling_rate, target_fps, stride_s * target_fps)
    raw = [spaced_indices(int(s), fps, num_frames, sampling_rate, target_fps) for s in starts]
    repeated = [int((r >= num_video_frames).sum()) for r in raw]
    keep = [i for i, n in enumerate(repeated) if n == 0 or not whole_only]
    return Window(fps=float(fps), num_frames=int(num_video_frames), window_s=num_frames * sampling_rate / target_fps,
                  stride_s=stride_s, starts=[round(int(starts[i]) / fps, 6) for i in keep],
                  indices=[np.clip(raw[i], 0, num_video_frames - 1).tolist() for i in keep],
                  repeated=[repeated[i] for i in keep])


def stride_seconds(data: DataConfig, features: FeaturesConfig) -> float:
    """Window stride in seconds: ``features.stride_seconds``, else ``stride_frames`` at target fps,
    else one window length."""
    if features.stride_seconds > 0:
        return features.stride_seconds
    if features.stride_frames > 0:
        return features.stride_frames / data.target_fps
    return data.num_frames * data.sampling_rate / data.target_fps


class WindowStream(IterableDataset):
    """Yields, per video, its windows in chunks of ``features.batch_size``, then its layout.

    Items (dicts): ``{"k", "chunk", "clips": (w * crops, 3, T, S, S) float32, "num_windows": w}``
    per chunk, then ``{"k", "done": True, "window": Window, "declared_frames": int}``; or, for a
    video that cannot be decoded, ``{"k", "error": "<type>: <reason>"}`` (its earlier chunks, if
    any, are then void). A video cut short keeps the whole windows of its decodable frames (the
    layout over fewer frames is a prefix of the first one, so chunks already sent stay valid).
    DataLoader workers split the videos between them; items of one video come from one worker
    in order.
    """

    def __init__(self, videos: Sequence[Tuple[int, str]], data: DataConfig, features: FeaturesConfig):
        self.videos, self.data, self.features = list(videos), data, features
        self.stride = stride_seconds(data, features)
        self.backend = config_backend(data)  # checked here, in the main process, not in each worker

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        mine = self.videos[info.id::info.num_workers] if info is not None else self.videos
        for k, path in mine:
            try:
                yield from self._video_items(k, path)
            except Exception as e:  # DecodeError, truncated file, zero frames: reported by the caller
                yield {"k": k, "error": f"{type(e).__name__}: {e}"}

    def _layout(self, reader, declared: int) -> Window:
        """Windows over the frames that decode; for a video cut short only whole windows."""
        d = self.data
        win = window_layout(reader.num_frames, reader.fps, d.num_frames, d.sampling_rate, d.target_fps, self.stride,
                            whole_only=reader.num_frames < declared)
        if not win.indices:
            lost = TruncatedVideoError(reader.path, reader.num_frames, declared, reader.fps).reason
            raise DecodeError(reader.path, f"{lost}: less than one window ({win.window_s:.2f} s)")
        return win

    def _video_items(self, k: int, path: str) -> Iterator[dict]:
        d, f = self.data, self.features
        bs = f.batch_size
        reader = open_video(path, num_threads=d.decode_threads, timeout=d.decode_timeout, backend=self.backend)
        try:
            declared = reader.declared_frames  # first: a file cut short is read with PyAV from here on
            win = self._layout(reader, declared)
            c = 0
            while c * bs < len(win.indices):
                chunk = win.indices[c * bs:(c + 1) * bs]
                unique = sorted({i for w in chunk for i in w})
                try:
                    frames = reader.get_frames(unique)                      # (U, H, W, 3) uint8
                except TruncatedVideoError:  # cut short: lay out again over the frames that decode
                    shorter = self._layout(reader, declared)
                    if len(shorter.indices) >= len(win.indices):
                        raise
                    win = shorter
                    continue
                pos = {i: j for j, i in enumerate(unique)}
                views = [v for w in chunk for v in test_views(frames[[pos[i] for i in w]], d, f.num_spatial_crops)]
                yield {"k": k, "chunk": c, "clips": torch.stack(views), "num_windows": len(chunk)}
                c += 1
            yield {"k": k, "done": True, "window": win, "declared_frames": declared}
        finally:
            reader.close()
