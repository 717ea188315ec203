"""The data side of feature extraction: sliding-window layout of a video and a stream of
decoded, transformed window batches (decoded in DataLoader workers while the model runs).

A window is a test clip of ``data.protocol`` starting at a chosen frame
(:meth:`~videoattn.data.protocols.Protocol.window_indices`; pyslowfast: ``num_frames`` indices by
linspace over ``num_frames x sampling_rate`` frames at ``target_fps``), resized and cropped as the
protocol's test views with ``features.num_spatial_crops`` crops. Windows start every
``features.stride_seconds`` (or ``stride_frames`` at target fps; default: one window length).
Only a video genuinely shorter than one window gets a window with samples past its end (the last
frame repeated; mmaction2 wraps around), counted in ``Window.repeated``; a video cut short (it
declares more frames than decode) gets only the whole windows of the frames that really decode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Generic, Iterable, Iterator, List, Sequence, Tuple, TypeVar, Union

import torch
from torch.utils.data import IterableDataset, get_worker_info

from videoattn.config import DataConfig, FeaturesConfig
from videoattn.data.decoding import DecodeError, TruncatedVideoError, config_backend, open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.transforms import to_clip, to_tchw


@dataclass(frozen=True)
class Window:
    """Sliding-window layout of one video, in seconds and native frame indices."""
    fps: float
    num_frames: int           # frames in the video
    window_s: float
    stride_s: float
    starts: List[float]
    indices: List[List[int]]  # (num_windows, T) native frame indices
    repeated: List[int] = field(default_factory=list)  # per window: samples past the end (see the module doc)

    @property
    def ends(self) -> List[float]:
        return [s + self.window_s for s in self.starts]


def window_layout(protocol: Protocol, spec: ClipSpec, num_video_frames: int, fps: float, stride_s: float = 0.0,
                  whole_only: bool = False) -> Window:
    """Windows covering the video; at least one (a short video's samples pass its end), or with
    ``whole_only`` only windows of real frames (none for a video shorter than one window).

    Window ``k`` starts at frame ``floor(k * stride_s * fps)`` (``stride_s`` 0: one window length,
    :meth:`Protocol.window_seconds`); its frames are ``protocol.window_indices(start)``. The
    windows are those whose frames all lie in the video (they form a prefix), so the layout of
    fewer frames is a prefix of the layout of more (same starts, same indices).
    """
    if num_video_frames <= 0 or fps <= 0:
        raise ValueError(f"video has {num_video_frames} frames at {fps} fps")
    window_s = protocol.window_seconds(fps, spec)
    stride = max((stride_s or window_s) * fps, 1.0)
    starts, raw = [], []
    for k in range(int(math.ceil(num_video_frames / stride)) + 1):
        start = int(math.floor(k * stride + 1e-6))
        idx = protocol.window_indices(start, fps, spec)
        if idx.max() >= num_video_frames and (starts or whole_only):
            break
        starts.append(start)
        raw.append(idx)
        if idx.max() >= num_video_frames:  # the first window of a video shorter than one window
            break
    return Window(fps=float(fps), num_frames=int(num_video_frames), window_s=window_s, stride_s=stride_s or window_s,
                  starts=[round(s / fps, 6) for s in starts],
                  indices=[protocol.fit(r, num_video_frames).tolist() for r in raw],
                  repeated=[int((r >= num_video_frames).sum()) for r in raw])


def stride_seconds(data: DataConfig, features: FeaturesConfig) -> float:
    """Window stride in seconds: ``features.stride_seconds``, else ``stride_frames`` at target fps,
    else 0.0 (one window length, which under mmaction2 depends on each video's fps)."""
    if features.stride_seconds > 0:
        return features.stride_seconds
    if features.stride_frames > 0:
        return features.stride_frames / data.target_fps
    return 0.0


@dataclass
class WindowChunk:
    """Up to ``features.batch_size`` decoded windows of video ``k`` (its ``chunk``-th chunk)."""
    k: int
    chunk: int
    clips: torch.Tensor  # (num_windows * crops, 3, T, S, S) float32
    num_windows: int

    def pin_memory(self) -> "WindowChunk":
        """Called by a DataLoader with ``pin_memory`` (it pins tensors it finds, not dataclass fields)."""
        return WindowChunk(self.k, self.chunk, self.clips.pin_memory(), self.num_windows)


@dataclass
class WindowDone:
    """Video ``k`` is complete: its layout (all its chunks came before) and the frames it declares."""
    k: int
    window: Window
    declared_frames: int


@dataclass
class WindowError:
    """Video ``k`` could not be decoded (``"<type>: <reason>"``); its earlier chunks are void."""
    k: int
    error: str


WindowItem = Union[WindowChunk, WindowDone, WindowError]
T = TypeVar("T")


@dataclass
class VideoOutputs(Generic[T]):
    """What :func:`per_video` gives for a complete video: ``outputs`` holds one result per chunk, in order."""
    k: int
    window: Window
    declared_frames: int
    outputs: List[T]


def per_video(items: Iterable[WindowItem], run: Callable[[WindowChunk], T]
              ) -> Iterator[Union[VideoOutputs[T], WindowError]]:
    """The one consumer of a :class:`WindowStream`: ``run`` each chunk as it arrives, and yield per
    video either its :class:`VideoOutputs` (when its :class:`WindowDone` arrives) or its
    :class:`WindowError` (the results of its earlier chunks dropped)."""
    pending: Dict[int, List[T]] = {}
    for item in items:
        if isinstance(item, WindowChunk):
            pending.setdefault(item.k, []).append(run(item))
        elif isinstance(item, WindowDone):
            yield VideoOutputs(item.k, item.window, item.declared_frames, pending.pop(item.k))
        else:
            pending.pop(item.k, None)
            yield item


class WindowStream(IterableDataset):
    """Yields, per video, its windows in chunks of ``features.batch_size``, then its layout.

    Items: a :class:`WindowChunk` per chunk, then a :class:`WindowDone`; or, for a video that
    cannot be decoded, a :class:`WindowError` (its earlier chunks, if any, are then void). A
    video cut short keeps the whole windows of its decodable frames (the layout over fewer
    frames is a prefix of the first one, so chunks already sent stay valid). DataLoader workers
    split the videos between them; items of one video come from one worker in order;
    :func:`per_video` consumes them.
    """

    def __init__(self, videos: Sequence[Tuple[int, str]], data: DataConfig, features: FeaturesConfig):
        self.videos, self.data, self.features = list(videos), data, features
        self.stride = stride_seconds(data, features)
        self.backend = config_backend(data)  # checked here, in the main process, not in each worker
        self.protocol = Protocol.from_data(data)
        self.spec = ClipSpec.from_data(data, 1, features.num_spatial_crops)
        self.protocol.check(self.spec, "test")

    def __iter__(self) -> Iterator[WindowItem]:
        info = get_worker_info()
        mine = self.videos[info.id::info.num_workers] if info is not None else self.videos
        for k, path in mine:
            try:
                yield from self._video_items(k, path)
            except Exception as e:  # DecodeError, truncated file, zero frames: reported by the caller
                yield WindowError(k, f"{type(e).__name__}: {e}")

    def _layout(self, reader, declared: int) -> Window:
        """Windows over the frames that decode; for a video cut short only whole windows."""
        win = window_layout(self.protocol, self.spec, reader.num_frames, reader.fps, self.stride,
                            whole_only=reader.num_frames < declared)
        if not win.indices:
            lost = TruncatedVideoError(reader.path, reader.num_frames, declared, reader.fps).reason
            raise DecodeError(reader.path, f"{lost}: less than one window ({win.window_s:.2f} s)")
        return win

    def _views(self, frames: torch.Tensor) -> List[torch.Tensor]:
        """uint8 (T, H, W, 3) -> the protocol's test crops, each normalised (3, T, S, S)."""
        resized = self.protocol.test_resize(to_tchw(frames), self.spec)
        return [to_clip(self.protocol.test_crop(resized, c, self.spec), self.data)
                for c in range(self.spec.num_spatial_crops)]

    def _video_items(self, k: int, path: str) -> Iterator[WindowItem]:
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
                views = [v for w in chunk for v in self._views(frames[[pos[i] for i in w]])]
                yield WindowChunk(k, c, torch.stack(views), len(chunk))
                c += 1
            yield WindowDone(k, win, declared)
        finally:
            reader.close()
