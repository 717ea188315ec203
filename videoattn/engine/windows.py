"""The data side of feature extraction: sliding-window layout of a video and a stream of
decoded, transformed window batches (decoded in DataLoader workers while the model runs).

A window is a PySlowFast clip: ``data.num_frames`` samples ``data.sampling_rate / data.target_fps``
seconds apart; windows start every ``features.stride_seconds`` (or ``stride_frames`` at target fps).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import IterableDataset, get_worker_info


@dataclass(frozen=True)
class Window:
    """Sliding-window layout of one video, in seconds and native frame indices."""
    fps: float
    num_frames: int           # frames in the video
    window_s: float
    stride_s: float
    starts: List[float]
    indices: List[List[int]]  # (num_windows, T) native frame indices

    @property
    def ends(self) -> List[float]:
        return [s + self.window_s for s in self.starts]


def window_layout(num_video_frames: int, fps: float, num_frames: int, sampling_rate: int, target_fps: float,
                  stride_s: float) -> Window:
    """Windows covering the video; at least one (a short video repeats its last frame).

    Starts every ``stride_s`` seconds (:func:`videoattn.data.sampling.window_starts`); a window's
    ``num_frames`` samples are ``sampling_rate / target_fps`` s apart (as training clips) and its
    nominal length is ``window_s = num_frames * sampling_rate / target_fps``.
    """
    from videoattn.data.sampling import window_starts

    if num_video_frames <= 0 or fps <= 0:
        raise ValueError(f"video has {num_video_frames} frames at {fps} fps")
    starts = window_starts(num_video_frames, fps, num_frames, sampling_rate, target_fps, stride_s * target_fps)
    indices = [clip_indices(int(s), fps, num_video_frames, num_frames, sampling_rate, target_fps) for s in starts]
    return Window(fps=float(fps), num_frames=int(num_video_frames), window_s=num_frames * sampling_rate / target_fps,
                  stride_s=stride_s, starts=[round(int(s) / fps, 6) for s in starts], indices=indices)


def clip_indices(start_frame: int, fps: float, num_video_frames: int, num_frames: int, sampling_rate: int,
                 target_fps: float) -> List[int]:
    """The clip's native frame indices from ``start_frame``, spaced as
    :func:`videoattn.data.sampling.clip_indices` spaces them, clamped to the video."""
    step = sampling_rate * fps / target_fps
    idx = np.floor(start_frame + step * np.arange(num_frames) + 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_video_frames - 1).tolist()


def stride_seconds(cfg: DictConfig) -> float:
    """Window stride in seconds: ``features.stride_seconds``, else ``stride_frames`` at target fps,
    else one window length."""
    f = cfg.features
    if f.stride_seconds > 0:
        return float(f.stride_seconds)
    if f.stride_frames > 0:
        return f.stride_frames / cfg.data.target_fps
    return cfg.data.num_frames * cfg.data.sampling_rate / cfg.data.target_fps


class WindowStream(IterableDataset):
    """Yields, per video, its windows in chunks of ``features.batch_size``.

    Items (dicts): ``{"k", "chunk", "num_chunks", "clips": (w * crops, 3, T, S, S) float32,
    "num_windows": w, "window": Window}`` or, for a video that cannot be decoded,
    ``{"k", "error": "<type>: <reason>"}`` (the video's earlier chunks, if any, are then void).
    DataLoader workers split the videos between them; chunks of one video come from one worker
    in order.
    """

    def __init__(self, videos: Sequence[Tuple[int, str]], cfg: DictConfig):
        from videoattn.data.decoding import config_backend

        self.videos, self.cfg = list(videos), cfg
        self.stride = stride_seconds(cfg)
        self.backend = config_backend(cfg)  # checked here, in the main process, not in each worker

    def __iter__(self) -> Iterator[dict]:
        from videoattn.data.decoding import open_video
        from videoattn.data.transforms import test_views

        info = get_worker_info()
        mine = self.videos[info.id::info.num_workers] if info is not None else self.videos
        d, f = self.cfg.data, self.cfg.features
        bs = max(1, int(f.batch_size))
        for k, path in mine:
            try:
                reader = open_video(path, num_threads=d.decode_threads, timeout=d.decode_timeout,
                                    backend=self.backend)
                win = window_layout(reader.num_frames, reader.fps, d.num_frames, d.sampling_rate, d.target_fps,
                                    self.stride)
                num_chunks = math.ceil(len(win.indices) / bs)
                for c in range(num_chunks):
                    chunk = win.indices[c * bs:(c + 1) * bs]
                    unique = sorted({i for w in chunk for i in w})
                    frames = reader.get_frames(unique)                      # (U, H, W, 3) uint8
                    pos = {i: j for j, i in enumerate(unique)}
                    views = [v for w in chunk
                             for v in test_views(frames[[pos[i] for i in w]], self.cfg, f.num_spatial_crops)]
                    yield {"k": k, "chunk": c, "num_chunks": num_chunks, "clips": torch.stack(views),
                           "num_windows": len(chunk), "window": win}
            except Exception as e:  # DecodeError, truncated file, zero frames: reported by the caller
                yield {"k": k, "error": f"{type(e).__name__}: {e}"}
