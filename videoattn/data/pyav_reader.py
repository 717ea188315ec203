"""The PyAV reader: the decord fallback and ``data.decoding_backend: pyav``.

Decodes sequentially from the keyframe before a clip, converting only the sampled frames to
RGB. It finds where a file cut short stops decoding (a damaged packet; Matroska drops a cut
block silently) and raises :class:`~videoattn.data.decode_guard.TruncatedVideoError` for frames past it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import av
import numpy as np
import torch

from videoattn.data.decode_guard import DecodeError, TruncatedVideoError, run_with_timeout, short_reason
from videoattn.data.orientation import quarter_turns, upright_array


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
            raise DecodeError(path, f"pyav cannot open: {short_reason(e)}") from None
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
                        got[i] = upright_array(frame.to_ndarray(format="rgb24", threads=1), quarter_turns(frame))
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
