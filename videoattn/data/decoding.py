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
import queue
import threading
from typing import Callable, Optional, Sequence, Tuple

import av  # noqa: F401  -- must be loaded before decord: decord's bundled FFmpeg breaks PyAV's libvpx otherwise
import numpy as np
import torch

try:
    import decord
except ImportError:  # pragma: no cover - decord is a hard dependency, PyAV alone still works
    decord = None


BACKENDS = {"decord": "auto", "pyav": "pyav"}  # cfg.data.decoding_backend -> open_video(backend=...)


def config_backend(cfg) -> str:
    """``open_video``'s backend for ``cfg.data.decoding_backend``; ValueError naming the choices."""
    name = cfg.data.decoding_backend
    if name not in BACKENDS:
        raise ValueError(f"data.decoding_backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


class DecodeError(RuntimeError):
    """A video cannot be opened or decoded. ``path`` and ``reason`` are attributes."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


class TruncatedVideoError(DecodeError):
    """Frames were asked for past the frames that really decode: only ``decoded_frames`` of the
    ``declared_frames`` the container declares decode (frames ``0 .. decoded_frames - 1``)."""

    def __init__(self, path: str, decoded_frames: int, declared_frames: int, fps: float):
        self.decoded_frames, self.declared_frames, self.fps = int(decoded_frames), int(declared_frames), float(fps)
        super().__init__(path, f"truncated: only {self.lost()}")

    def lost(self) -> str:
        """``"61 of 150 declared frames decode (2.03 s of 5.00 s)"``."""
        return (f"{self.decoded_frames} of {self.declared_frames} declared frames decode "
                f"({self.decoded_frames / self.fps:.2f} s of {self.declared_frames / self.fps:.2f} s)")


# ----------------------------------------------------------------------------- time-limited calls
class _DecodeThread:
    """One daemon thread running decode calls (daemon: a stuck call never blocks process exit)."""

    def __init__(self):
        self.pid = os.getpid()
        self.jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        threading.Thread(target=self._run, name="videoattn-decode", daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, box, done = self.jobs.get()
            try:
                box.append((True, fn()))
            except BaseException as e:  # handed to the caller
                box.append((False, e))
            done.set()


_THREAD: Optional[_DecodeThread] = None
_THREAD_LOCK = threading.Lock()


def run_with_timeout(fn: Callable, timeout: Optional[float], what: str, path: str):
    """``fn()`` in the decode thread; raise DecodeError if it does not return within ``timeout`` s.

    A timed-out call cannot be killed (it is native code); its thread is abandoned and a fresh
    one serves the next call, so the worker process keeps going.
    """
    global _THREAD
    if not timeout or timeout <= 0:
        return fn()
    with _THREAD_LOCK:
        if _THREAD is None or _THREAD.pid != os.getpid():  # DataLoader workers fork: one per process
            _THREAD = _DecodeThread()
        worker = _THREAD
    box: list = []
    done = threading.Event()
    worker.jobs.put((fn, box, done))
    if not done.wait(timeout):
        with _THREAD_LOCK:
            if _THREAD is worker:
                _THREAD = None
        raise DecodeError(path, f"{what} timed out after {timeout:g} s")
    ok, value = box[0]
    if ok:
        return value
    raise value


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
            error = DecodeError(path, f"decord cannot open: {_short(e)}")
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
            batch = run_with_timeout(lambda: vr.get_batch(idx).asnumpy(), self.timeout, "decode", self.path)
            if batch.shape[0] != len(idx):
                error = DecodeError(self.path, f"decord returned {batch.shape[0]} frames for {len(idx)} indices")
        except DecodeError as e:
            if "timed out" in e.reason:
                self._vr = None  # still in use by the abandoned call: not freed here
            error = e
        except Exception as e:
            error = DecodeError(self.path, f"decord cannot decode frames {idx[0]}..{idx[-1]}: {_short(e)}")
        del vr
        if error is not None:
            self.close()
            raise error
        return torch.from_numpy(batch)

    def close(self) -> None:
        vr, self._vr = self._vr, None
        _free_decord(vr)


class PyAVReader:
    """PyAV reader that decodes sequentially from the keyframe before the clip start.

    The decord fallback (and ``data.decoding_backend: pyav``). Unlike PySlowFast's PyAV path it
    converts only the sampled frames to RGB, and lets the decoder drop non-reference frames before
    the clip start undecoded. Frames are matched to indices by their timestamps. Decoding stops at
    a damaged packet (a file cut short); asking for frames past the last one that decoded raises
    :class:`TruncatedVideoError`.
    """

    backend = "pyav"

    def __init__(self, path: str, timeout: Optional[float] = None):
        self.path, self.timeout = path, timeout
        try:
            self._container = av.open(path)
            stream = self._container.streams.video[0]
        except Exception as e:
            raise DecodeError(path, f"pyav cannot open: {_short(e)}") from None
        stream.thread_type = "NONE"  # no FFmpeg decoder threads: clips are short, and workers are forked
        stream.codec_context.thread_count = 1
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        if self.fps <= 0:
            raise DecodeError(path, "pyav: unknown frame rate")
        self.num_frames = self.reported_frames = self.declared_frames = declared_count(self._container, self.fps)
        if self.num_frames <= 0:
            raise DecodeError(path, "pyav: no frames")
        self._start = stream.start_time or 0
        self._decodable: Optional[int] = None

    def _index(self, pts: Optional[int]) -> int:
        if pts is None:
            return -1
        return int(round(float((pts - self._start) * self._stream.time_base) * self.fps))

    def _packets(self, target_pts: int):
        """``(packet to decode or None to flush, damaged)`` from the keyframe before ``target_pts``;
        a damaged packet (a file cut short) flushes the decoder and ends the stream."""
        self._container.seek(max(target_pts, self._start), stream=self._stream, backward=True, any_frame=False)
        for packet in self._container.demux(self._stream):  # the last packet is empty: it flushes
            yield (None, True) if packet.is_corrupt else (packet, False)
            if packet.is_corrupt:
                return

    def _decode_from(self, first: int, last: int) -> Tuple[dict, int, bool]:
        """Decode from the keyframe before ``first`` until frame ``last`` -> ({index >= first: RGB
        frame}, last index decoded, whether the stream ran out: a damaged packet, corrupt data or
        its end)."""
        codec = self._stream.codec_context
        got: dict = {}
        end, ran_out = -1, False
        try:
            for packet, ran_out in self._packets(self._start + int(first / self.fps / self._stream.time_base)):
                ran_out = ran_out or packet.size == 0   # damaged, or the empty last packet: the end
                # Before the clip (less one frame of timestamp rounding) frames only matter as
                # references: the decoder may drop the others undecoded (B-frames, mostly).
                pre_roll = packet is not None and packet.pts is not None and self._index(packet.pts) < first - 1
                codec.skip_frame = "NONREF" if pre_roll else "DEFAULT"
                try:
                    frames = codec.decode(packet)
                except av.error.FFmpegError:  # corrupt data: the decodable stream ends here
                    if end < 0:
                        raise
                    ran_out = True
                    break
                for frame in frames:
                    i = self._index(frame.pts)
                    end = max(end, i)
                    if i >= first:
                        got[i] = frame.to_ndarray(format="rgb24", threads=1)
                if end >= last:
                    break
        finally:
            codec.skip_frame = "DEFAULT"
        return got, end, ran_out

    def decodable_frames(self) -> int:
        """Frames ``0 .. n - 1`` that decode (decodes the whole stream once; only asked when a read
        ran into damage or into the end of the stream). A stream that is damaged or ends before its
        declared count (Matroska drops a cut block silently): up to the first index that never
        decoded (the frames the cut held back); a complete one: up to its last frame (timestamps of
        a variable frame rate may skip an index)."""
        if self._decodable is None:
            codec, seen, damaged = self._stream.codec_context, set(), False
            for packet, damaged in self._packets(self._start):
                try:
                    seen.update(self._index(f.pts) for f in codec.decode(packet))
                except av.error.FFmpegError:
                    damaged = True
                    break
            n, end = 0, max(seen, default=-1) + 1
            while n in seen:
                n += 1
            self._decodable = n if damaged or end < self.declared_frames else end
        return self._decodable

    def _decode(self, idx: list) -> np.ndarray:
        first, last = idx[0] if idx else 0, max(idx)
        got, end, ran_out = self._decode_from(first, last)
        if end < last or (ran_out and any(i not in got for i in idx)):  # cut short? how much decodes?
            n = min(self.decodable_frames(), self.declared_frames)
            if n == 0:
                raise DecodeError(self.path, "pyav: no decodable frames")
            self.num_frames = n
            if last >= n:
                raise TruncatedVideoError(self.path, n, self.declared_frames, self.fps)
            if any(i not in got for i in idx):  # frames the damage held back: decode them once more
                got, end, ran_out = self._decode_from(first, last)
        if not got:
            raise DecodeError(self.path, "pyav: no decodable frames")
        keys = np.array(sorted(got))
        # nearest decoded frame at or before each index (timestamps may skip an index)
        pos = np.clip(np.searchsorted(keys, idx, side="right") - 1, 0, len(keys) - 1)
        return np.stack([got[int(keys[p])] for p in pos])

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, None)
        if self.num_frames < self.declared_frames and idx.max(initial=0) >= self.num_frames:
            raise TruncatedVideoError(self.path, self.num_frames, self.declared_frames, self.fps)
        idx = np.minimum(idx, self.num_frames - 1).tolist()
        try:
            return torch.from_numpy(run_with_timeout(lambda: self._decode(idx), self.timeout, "decode", self.path))
        except DecodeError:
            raise
        except Exception as e:
            raise DecodeError(self.path, f"pyav cannot decode: {_short(e)}") from None

    def close(self) -> None:
        self._container.close()


def declared_count(container, fps: float) -> int:
    """Frames the container declares for its first video stream: its frame count, else the
    stream's duration (Matroska/WebM: the DURATION tag) times ``fps``, else the file's duration
    times ``fps`` (0: unknown)."""
    stream = container.streams.video[0]
    if stream.frames > 0:
        return int(stream.frames)
    try:
        h, m, sec = stream.metadata.get("DURATION", "").split(":")
        return int(round((int(h) * 3600 + int(m) * 60 + float(sec)) * fps))
    except ValueError:
        pass
    if stream.duration and stream.time_base:
        return int(stream.duration * stream.time_base * fps)
    if container.duration:
        return int(container.duration / av.time_base * fps)
    return 0


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


def _short(e: BaseException, limit: int = 200) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    msg = text[0] if text else type(e).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."
