"""Open a video and read frames by index: decord first, PyAV once as a fallback.

``open_video(path, num_threads) -> Video`` with ``.fps``, ``.num_frames``, ``.declared_frames`` and
``.get_frames(indices) -> uint8 (T, H, W, 3)``. Frames that do not decode are never returned:

* a file cut short (a truncated download; a ``faststart`` mp4 keeps its full index) or a header
  that over-reports its frame count: decord's ``len()`` exceeds the packets it indexed (and
  ``get_batch`` past the last real packet can loop forever), so such a file is read with PyAV,
  which stops at the first damaged packet. Asking for a frame past the frames that really decode
  raises :class:`TruncatedVideoError` with the count that does decode (``num_frames`` becomes it);
  callers lay their clips out again over those frames or count the video as broken.
  ``declared_frames`` keeps the container's claim (WebM/MKV: its DURATION tag times the fps).
* a hang inside the decoder: each read runs in a helper thread with a time limit
  (``timeout``); past it the read is abandoned and the video counts as broken.
* any decord error on open or read: PyAV is tried once for that video; if it fails too, a
  :class:`DecodeError` carries both reasons.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import av  # must be loaded before decord: decord's bundled FFmpeg breaks PyAV's libvpx otherwise
import numpy as np
import torch

from videoattn.data.decode_guard import DecodeError, TruncatedVideoError, run_with_timeout, short_reason
from videoattn.data.pyav_reader import PyAVReader, declared_count
from videoattn.utils.errors import UsageError

try:
    import decord
except ImportError:  # pragma: no cover - decord is a hard dependency, PyAV alone still works
    decord = None


BACKENDS = {"decord": "auto", "pyav": "pyav"}  # data.decoding_backend -> open_video(backend=...)


def config_backend(data) -> str:
    """``open_video``'s backend for ``data.decoding_backend``; ValueError naming the choices."""
    name = data.decoding_backend
    if name not in BACKENDS:
        raise UsageError(f"data.decoding_backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


# ------------------------------------------------------------------------------------------ readers
def _free_decord(vr) -> None:
    """Free a decord reader now (idempotent).

    decord's reader owns a native decoding thread that its destructor joins. A reader left to the
    garbage collector (e.g. kept alive by an exception's traceback) may be collected in a forked
    DataLoader worker, where that thread does not exist: the join then blocks forever. So every
    reader is freed explicitly, on close and on every error path.
    """
    handle = getattr(vr, "_handle", None)
    if handle is not None:
        vr._handle = None
        from decord.video_reader import _CAPI_VideoReaderFree

        _CAPI_VideoReaderFree(handle)


class _DecordReader:
    backend = "decord"

    def __init__(self, path: str, num_threads: int, timeout: Optional[float]):
        self.path, self.timeout = path, timeout
        if decord is None:
            raise DecodeError(path, "decord is not installed")
        self._vr = None
        error = None
        try:
            self._vr = run_with_timeout(
                lambda: decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads), timeout, "open", path)
            reported = len(self._vr)
            self._vr.get_frame_timestamp(0)  # loads decord's table of the packets it really indexed
            indexed = int(self._vr._frame_pts.shape[0])
            self.fps = float(self._vr.get_avg_fps())
        except DecodeError as e:
            error = e
        except Exception as e:  # decord raises DECORDError, AssertionError, RuntimeError, IndexError...
            error = DecodeError(path, f"decord cannot open: {short_reason(e)}")
        if error is None:
            self.reported_frames = self.declared_frames = reported
            self.num_frames = min(reported, indexed)
            if self.num_frames <= 0:
                error = DecodeError(path, "decord: no frames")
            elif indexed < reported:  # cut short, or an over-reporting header: PyAV finds the real end
                error = DecodeError(path, f"decord: the container declares {reported} frames, "
                                          f"only {indexed} packets are indexed")
            elif not np.isfinite(self.fps) or self.fps <= 0:
                error = DecodeError(path, f"decord: invalid frame rate {self.fps}")
        if error is not None:
            self.close()
            raise error

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, self.num_frames - 1).tolist()
        vr, error = self._vr, None
        try:
            batch = run_with_timeout(lambda reader=vr: reader.get_batch(idx).asnumpy(), self.timeout, "decode", self.path)
            if batch.shape[0] != len(idx):
                error = DecodeError(self.path, f"decord returned {batch.shape[0]} frames for {len(idx)} indices")
        except DecodeError as e:
            if "timed out" in e.reason:
                self._vr = None  # still in use by the abandoned call: not freed here
            error = e
        except Exception as e:
            error = DecodeError(self.path, f"decord cannot decode frames {idx[0]}..{idx[-1]}: {short_reason(e)}")
        del vr
        if error is not None:
            self.close()
            raise error
        return torch.from_numpy(batch)

    def close(self) -> None:
        vr, self._vr = self._vr, None
        _free_decord(vr)


class Video:
    """A decoded-on-demand video: decord, switching to PyAV once if decord fails.

    Attributes:
        fps: frames per second of the video.
        num_frames: frames available; lowered to the frames that really decode once a read
            raised :class:`TruncatedVideoError`.
        declared_frames: frames the container declares (more than ``num_frames``: cut short).
        backend: "decord" or "pyav" (the reader in use).
    """

    def __init__(self, path: str, num_threads: int = 1, timeout: Optional[float] = None, backend: str = "auto"):
        self.path, self._threads, self._timeout = path, num_threads, timeout
        self._fell_back = backend == "pyav"
        self._errors: list = []
        self._declared: Optional[int] = None
        if backend == "pyav":
            self._reader = PyAVReader(path, timeout)
            return
        try:
            self._reader = _DecordReader(path, num_threads, timeout)
        except DecodeError as e:
            if backend == "decord":
                raise
            self._fallback(e)

    def _fallback(self, error: DecodeError):
        self._errors.append(error.reason)
        if self._fell_back:
            raise DecodeError(self.path, "; ".join(self._errors))
        self._fell_back = True
        try:
            self._reader = PyAVReader(self.path, self._timeout)
        except DecodeError as e:
            self._errors.append(e.reason)
            raise DecodeError(self.path, "; ".join(self._errors)) from None

    @property
    def fps(self) -> float:
        return self._reader.fps

    @property
    def num_frames(self) -> int:
        return self._reader.num_frames

    @property
    def declared_frames(self) -> int:
        """The container's frame count. decord counts the packets it indexed, which for a file cut
        short (WebM/MKV, AVI) is what is left: the header is asked (once) to tell, and a video that
        declares more frames than decord indexed is read with PyAV from then on (it stops at a
        damaged last packet, where decord would conceal the damage)."""
        if self._declared is None:
            self._declared = self._reader.declared_frames
            if self._reader.backend == "decord":
                try:
                    with av.open(self.path) as container:
                        self._declared = max(self._declared, declared_count(container, self.fps))
                except Exception:  # decord read it; the header probe is only a cross-check
                    pass
                if self._declared > self.num_frames:
                    self._fallback(DecodeError(self.path, f"decord indexed {self.num_frames} of "
                                                          f"{self._declared} declared frames"))
        return self._declared

    @property
    def backend(self) -> str:
        return self._reader.backend

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Frames at ``indices`` (at most ``num_frames - 1``) -> uint8 (T, H, W, 3);
        :class:`TruncatedVideoError` if one lies past the frames that really decode."""
        if len(indices) and max(indices) >= self.num_frames:
            self.declared_frames  # noqa: B018 -- a file cut short switches to PyAV here, which refuses
        try:
            return self._reader.get_frames(indices)
        except TruncatedVideoError:
            raise
        except DecodeError as e:
            self._fallback(e)
            try:
                return self._reader.get_frames(indices)
            except TruncatedVideoError:
                raise
            except DecodeError as e2:
                self._errors.append(e2.reason)
                raise DecodeError(self.path, "; ".join(self._errors)) from None

    def close(self) -> None:
        self._reader.close()


def open_video(path: str, num_threads: int = 1, timeout: Optional[float] = None, backend: str = "auto") -> Video:
    """Open ``path`` for random access; raise :class:`DecodeError` if neither decord nor PyAV can.

    Args:
        num_threads: decord decoding threads (``cfg.data.decode_threads``; 0 = decord's auto).
        timeout: seconds one open / one read may take (``cfg.data.decode_timeout``; None = no limit).
        backend: "auto" (decord, PyAV once on failure), "decord" or "pyav".
    """
    if not os.path.isfile(path):
        raise DecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")
    return Video(path, num_threads, timeout, backend)
