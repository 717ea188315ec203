"""The PyAV reader: the decord fallback and ``data.decoding_backend: pyav``.

Decodes sequentially from the keyframe before a clip, converting only the sampled frames to
RGB. It finds where a file cut short stops decoding (a damaged packet; Matroska drops a cut
block silently) and raises :class:`~videoattn.data.decode_guard.TruncatedVideoError` for frames past it.
"""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Set

import av
import numpy as np
import torch

from videoattn.data.decode_guard import DecodeError, TruncatedVideoError, run_with_timeout, short_reason
from videoattn.data.orientation import quarter_turns, upright_array


@dataclass
class _Pass:
    """One decoding pass over a clip."""

    got: Dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> RGB (H, W, 3) uint8
    end: int = -1  # the last frame index decoded
    ran_out: bool = False  # the stream ended: a damaged packet, corrupt data or its end
    dropped: Set[int] = field(default_factory=set)  # indices the decoder dropped undecoded
    first: int = -1  # the first frame index decoded (after the seek)

    def missed(self, want: Sequence[int]) -> bool:
        """Whether a dropped frame lies after the frame that answers a wanted index, up to that index
        (it would have been the one on screen)."""
        keys = sorted(self.got)
        for w in set(want) if self.dropped else ():
            k = bisect.bisect_right(keys, w) - 1
            answer = keys[k] if k >= 0 else -1
            if any(answer < d <= w for d in self.dropped):
                return True
        return False


class PyAVReader:
    """PyAV reader that decodes sequentially from the keyframe before the clip start.

    ``data.decoding_backend: pyav`` (the default) and the decord fallback. Unlike PySlowFast's PyAV
    path it converts only the sampled frames to RGB, lets the decoder drop the non-reference frames
    the clip does not sample undecoded, and stops at the clip's last frame. Frames are matched to
    indices by their timestamps (a variable frame rate: the frame on screen at ``index / fps``, as
    ``prepare_data`` cuts; decord counts frames instead). Decoding stops at
    a damaged packet (a file cut short); asking for frames past the last one that decoded raises
    :class:`TruncatedVideoError`.
    """

    backend = "pyav"

    def __init__(
        self, path: str, timeout: Optional[float] = None, skip: bool = True, thread_type: str = "NONE", threads: int = 1
    ):
        """``skip``: drop the non-reference frames a clip does not sample (see :meth:`_decode_from`).
        ``thread_type`` / ``threads``: FFmpeg's decoder threads ("NONE", "SLICE", "FRAME", "AUTO").
        The defaults are the fastest per CPU core (docs/benchmarks.md, decoders): threads only
        shorten one clip's wall time, at a CPU cost, and loader workers are already one per core;
        the other values exist for the data benchmark."""
        self.path, self.timeout, self._skip = path, timeout, skip
        try:
            self._container = av.open(path)
            stream = self._container.streams.video[0]
        except Exception as e:
            raise DecodeError(path, f"pyav cannot open: {short_reason(e)}") from None
        stream.thread_type = thread_type
        stream.codec_context.thread_count = threads
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        if self.fps <= 0:
            raise DecodeError(path, "pyav: unknown frame rate")
        self.num_frames = self.reported_frames = self.declared_frames = declared_count(self._container, self.fps)
        if self.num_frames <= 0:
            raise DecodeError(path, "pyav: no frames")
        self._start = self._first_pts(stream)
        self._frames_per_tick = float(stream.time_base) * self.fps
        self._vfr = stream.base_rate != stream.average_rate  # FFmpeg's guess of the rate vs the average
        self._decodable: Optional[int] = None

    def _first_pts(self, stream) -> int:
        """The timestamp of index 0: the stream's start time, or the first frame shown if that comes
        later (the smallest timestamp of the first packets the decoder keeps): an AVI with B-frames
        (MPEG-4 part 2) starts at 0 and shows its first frame at 1. Packets an edit list discards
        (a stream-copy cut) come before the start and do not count."""
        start = stream.start_time or 0
        try:
            packets = itertools.islice(self._container.demux(stream), 16)
            pts = [p.pts for p in packets if p.pts is not None and not p.is_discard]
        except av.error.FFmpegError:
            return start
        return max(start, min(pts, default=start))

    def _index(self, pts: Optional[int]) -> int:
        if pts is None:
            return -1
        return int(round((pts - self._start) * self._frames_per_tick))  # floats: Fractions cost ~2 ms per clip

    def _packets(self, target_pts: int):
        """``(packet to decode or None to flush, damaged)`` from the keyframe before ``target_pts``;
        a damaged packet (a file cut short) flushes the decoder and ends the stream."""
        self._container.seek(max(target_pts, self._start), stream=self._stream, backward=True, any_frame=False)
        for packet in self._container.demux(self._stream):  # the last packet is empty: it flushes
            yield (None, True) if packet.is_corrupt else (packet, False)
            if packet.is_corrupt:
                return

    def _decode_from(self, want: list, skip: bool = True, from_start: bool = False) -> _Pass:
        """Decode from the keyframe before ``min(want)`` (``from_start``: from the first frame) until
        frame ``max(want)`` (a variable frame rate: until a later frame, since two frames may round to
        one index and the later one is on screen).

        Only the frames that answer a wanted index (the last decoded frame at or before it) are
        converted to RGB. With ``skip`` the decoder drops, undecoded, every non-reference frame whose
        packet is not at a wanted index: the pre-roll and the gaps between sampled frames (with
        B-frames that no frame references, as prepared files have, most of a sparse clip). A wanted
        index then misses its frame only if its timestamps skip it (a variable frame rate) and a
        dropped frame was the one on screen: :meth:`_decode` checks and decodes such a clip again
        without dropping."""
        codec = self._stream.codec_context
        wanted = np.unique(want)
        wanted_set = set(wanted.tolist())
        out = _Pass()
        held, held_i = None, -1
        try:
            target = 0 if from_start else int(wanted[0] / self.fps / self._stream.time_base)
            for packet, out.ran_out in self._packets(self._start + target):
                out.ran_out = out.ran_out or packet.size == 0  # damaged, or the empty last packet: the end
                i = self._index(packet.pts) if packet is not None and packet.pts is not None else None
                drop = skip and i is not None and i not in wanted_set
                codec.skip_frame = "NONREF" if drop else "DEFAULT"
                try:
                    frames = codec.decode(packet)
                except av.error.FFmpegError:  # corrupt data: the decodable stream ends here
                    if out.end < 0:
                        raise
                    out.ran_out = True
                    break
                if drop:
                    out.dropped.add(i)
                for frame in frames:
                    j = self._index(frame.pts)
                    out.dropped.discard(j)  # a reference frame: decoded after all
                    if held is not None and _answers(wanted, held_i, j):  # held is on screen for [held_i, j)
                        out.got[held_i] = self._rgb(held)
                    held, held_i, out.end = frame, j, max(out.end, j)
                    out.first = j if out.first < 0 else out.first
                if out.end > wanted[-1] or (out.end == wanted[-1] and not self._vfr):
                    break
        finally:
            codec.skip_frame = "DEFAULT"
        if held is not None and _answers(wanted, held_i, None):
            out.got[held_i] = self._rgb(held)
        return out

    @staticmethod
    def _rgb(frame) -> np.ndarray:
        return upright_array(frame.to_ndarray(format="rgb24", threads=1), quarter_turns(frame))

    def decodable_frames(self) -> int:
        """Frames ``0 .. n - 1`` that decode (decodes the whole stream once; only asked when a read
        ran into damage or into the end of the stream). A stream that is damaged or ends before its
        declared count (Matroska drops a cut block silently): up to the first index that never
        decoded (the frames the cut held back); a complete one: up to its last frame (timestamps of
        a variable frame rate may skip an index; all its frames decode: its declared count)."""
        if self._decodable is None:
            codec, seen, damaged, count = self._stream.codec_context, set(), False, 0
            for packet, damaged in self._packets(self._start):
                try:
                    frames = codec.decode(packet)
                    count += len(frames)
                    seen.update(self._index(f.pts) for f in frames)
                except av.error.FFmpegError:
                    damaged = True
                    break
            n, end = 0, max(seen, default=-1) + 1
            while n in seen:
                n += 1
            if not damaged and count >= self.declared_frames:  # all there; timestamps may end early (VFR)
                self._decodable = max(end, self.declared_frames)
            else:
                self._decodable = n if damaged or end < self.declared_frames else end
        return self._decodable

    def _decode(self, idx: list) -> np.ndarray:
        last = max(idx)
        run = self._decode_from(idx, self._skip)
        late = run.first > min(idx)  # the seek landed after the clip start (AVI with B-frames): from the start
        if late:
            run = self._decode_from(idx, self._skip, from_start=True)
        if run.missed(idx):  # a dropped frame was on screen at a wanted index: decode every frame
            run = self._decode_from(idx, skip=False, from_start=late)
        if run.end < last or (run.ran_out and any(i not in run.got for i in idx)):  # cut short? how much decodes?
            n = min(self.decodable_frames(), self.declared_frames)
            if n == 0:
                raise DecodeError(self.path, "pyav: no decodable frames")
            self.num_frames = n
            if last >= n:
                raise TruncatedVideoError(self.path, n, self.declared_frames, self.fps)
            if any(i not in run.got for i in idx):  # frames the damage held back: decode them once more
                run = self._decode_from(idx, skip=False)
        if not run.got:
            raise DecodeError(self.path, "pyav: no decodable frames")
        keys = np.array(sorted(run.got))
        # the last decoded frame at or before each index (timestamps may skip an index)
        pos = np.clip(np.searchsorted(keys, idx, side="right") - 1, 0, len(keys) - 1)
        return np.stack([run.got[int(keys[p])] for p in pos])

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
            raise DecodeError(self.path, f"pyav cannot decode: {short_reason(e)}") from None

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


def _answers(wanted: np.ndarray, i: int, j: Optional[int]) -> bool:
    """Whether a sorted ``wanted`` has an index in ``[i, j)`` (``j`` None: ``[i, inf)``)."""
    k = int(np.searchsorted(wanted, i, side="left"))
    return k < len(wanted) and (j is None or wanted[k] < j)
