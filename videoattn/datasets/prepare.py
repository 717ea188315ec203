"""Prepare one video for training: find its frames, cut, scale, encode H.264, write atomically, verify.

    result = prepare_video(PrepareJob(source="raw/abc.webm", output="out/train/x/abc_000010_000020.mp4",
                                      start=10, end=20))

The cut (``start``/``end`` in seconds, from a Kinetics CSV row) is frame-accurate and defined on an
output time grid at the source's average frame rate ``fps``:

* output frame ``k`` (``k = 0 .. n-1``, ``n = ceil((end - start) * fps)``) is the source frame on
  screen at ``t_k = start + k / fps``: the last frame whose timestamp (seconds since the stream's
  start) is ``<= t_k + 0.5 / fps`` (half a frame absorbs timestamp rounding);
* for a constant-rate source whose frame ``i`` is at ``i / fps`` this is exactly the source frames
  ``round(start * fps) .. round(start * fps) + n - 1``; e.g. [10, 20] at 30 fps = frames 300..599;
* a variable-rate source is resampled to its average rate (frames repeated or dropped to keep real
  time, like ``ffmpeg -vsync cfr``), so the output has a constant rate and ``n`` frames;
* a source that ends within one frame of ``end`` gives ``n - 1`` frames; earlier: "span past the end".

Without ``start``/``end`` (an already-cut source) the whole file is kept: the grid starts at its
first frame and runs to its last one (a constant-rate source keeps every frame).

Rotation: a source with a display rotation (a phone video stored sideways) is turned upright and
written without one (:mod:`videoattn.data.orientation`, shared with ``predict --render``), so the
output shows what players and decord show; ``PrepareResult.rotated`` says by how many degrees.

Output: H.264 (libx264, CAVLC entropy coding unless ``cabac``: cheaper to decode; B-frames that no
frame references unless ``b_pyramid``: a reader can skip them) yuv420p ``.mp4``,
short side ``short_side`` (a smaller source keeps its size: upscaling adds bytes, not information),
both sides even, a keyframe at least every ``gop`` frames, no audio, the source's average frame
rate. Each output is encoded in memory, written to a temporary file next to its destination,
verified (decoded by PyAV: frame count and size; opened by decord, the training decoder: frame
count, last frame) and only then renamed into place. One thread per process (decoder and encoder):
parallelism comes from worker processes."""

from __future__ import annotations

import errno
import io
import itertools
import math
import os
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Iterator, Optional, Tuple

import av

from videoattn.data.orientation import quarter_turns, upright_frame, upright_size
from videoattn.utils.io import atomic_path

# failure reasons (the ``reason`` column of failed.csv)
MISSING, WRONG_EXTENSION, BAD_ROW, DUPLICATE = "missing", "wrong extension", "bad row", "duplicate"
UNREADABLE, NO_VIDEO, PAST_END, ZERO_FRAMES = "unreadable", "no video stream", "span past the end", "zero frames"
TIME_LIMIT, CRASHED, VERIFY, OUTPUT = "time limit", "worker crashed", "verification failed", "output error"
NOT_IN_CLASS, NOT_OURS = "not in a class folder", "output exists"
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
ENCODER = "libx264"
EPS = 1e-6


class PrepareError(Exception):
    """One video cannot be prepared; ``reason`` is one of the reasons above, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = "", fatal: bool = False):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.fatal = reason, detail, fatal


@dataclass
class PrepareJob:
    source: str
    output: str
    start: Optional[float] = None  # seconds; None with end=None: keep the whole (already-cut) file
    end: Optional[float] = None
    short_side: int = 320
    gop: int = 32
    crf: int = 23
    preset: str = "veryfast"
    cabac: bool = False  # False: CAVLC entropy coding (same picture, ~12% larger, decodes ~1.45x faster)
    b_pyramid: bool = False  # False: B-frames no frame references, which a reader may skip (x264 b-pyramid=none)


@dataclass
class PrepareResult:
    output: str
    ok: bool
    reason: str = ""
    detail: str = ""
    fatal: bool = False  # the output folder is unusable (full, read-only): stop the run
    frames: int = 0
    fps: str = ""  # exact rate, e.g. "30000/1001"
    width: int = 0
    height: int = 0
    size: int = 0
    mtime_ns: int = 0
    seconds: float = 0.0
    rotated: int = 0  # degrees (counter-clockwise) the frames were turned to be upright

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------- geometry
def output_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """(W, H) with the short side ``short_side`` (never upscaled) and both sides even (>= 2)."""
    short = min(width, height)
    scale = short_side / short if short > short_side else 1.0

    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    if scale == 1.0:
        return max(2, width // 2 * 2), max(2, height // 2 * 2)
    if width <= height:
        return short_side, even(height * scale)
    return even(width * scale), short_side


def frame_count(start: float, end: float, fps: Fraction) -> int:
    """Frames of the cut ``[start, end)`` at ``fps``: ``ceil((end - start) * fps)``."""
    return int(math.ceil((end - start) * fps - EPS))


# ------------------------------------------------------------------------------------------ source
def _open_source(path: str):
    """(container, video stream, fps) of ``path``; PrepareError for what cannot be used."""
    try:
        if os.path.getsize(path) == 0:
            raise PrepareError(UNREADABLE, "empty file (0 bytes)")
        container = av.open(path, metadata_errors="ignore")
    except PrepareError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise PrepareError(UNREADABLE, _short(e)) from None
    if not container.streams.video:
        kinds = ",".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise PrepareError(NO_VIDEO, f"streams: {kinds}")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    stream.codec_context.thread_count = 1
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        container.close()
        raise PrepareError(UNREADABLE, "unknown frame rate")
    return container, stream, Fraction(rate)


def _frames(
    container, stream, fps: Fraction, seek_to: Optional[float], stats: dict
) -> Iterator[Tuple[float, "av.VideoFrame"]]:
    """(time in seconds since the stream start, frame) in presentation order from the keyframe at
    or before ``seek_to`` (None: from the first frame). Frames well before ``seek_to`` are only
    decoded when they are references (the decoder drops the others); a corrupt or truncated tail
    ends the stream. ``stats["decoded"]`` counts the frames decoded."""
    base = stream.start_time if stream.start_time is not None else 0
    tb = stream.time_base
    if seek_to is not None and seek_to > 0:
        try:
            container.seek(base + int(seek_to / tb), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:  # not seekable: decode from the start
            container.seek(base, stream=stream, backward=True, any_frame=False)
    skip_before = (seek_to or 0) - 2 / fps
    last = None
    for packet in container.demux(stream):
        early = packet.pts is not None and float((packet.pts - base) * tb) < skip_before
        stream.codec_context.skip_frame = "NONREF" if early else "DEFAULT"
        try:
            decoded = stream.codec_context.decode(packet)
        except av.FFmpegError:
            return
        for frame in decoded:
            t = (
                float((frame.pts - base) * tb)
                if frame.pts is not None
                else (last + 1 / fps if last is not None else 0.0)
            )
            if last is None and seek_to is not None and t > seek_to + 0.5 / fps:  # seek landed late
                container.seek(base, stream=stream, backward=True, any_frame=False)
                yield from _frames(container, stream, fps, None, stats)
                return
            if last is not None and t <= last:  # duplicate / out-of-order timestamp
                continue
            last = t
            stats["decoded"] = stats.get("decoded", 0) + 1
            yield t, frame


def select_frames(
    frames: Iterator[Tuple[float, object]], t0: Optional[float], fps: Fraction, n: Optional[int]
) -> Iterator[object]:
    """The output grid (see the module docstring): frame ``k`` is the last input frame with
    ``t <= t0 + k / fps + 0.5 / fps``. ``t0=None``: the first frame's time; ``n=None``: up to the
    last frame. Grid points before the first frame (at most one frame early) show the first frame."""
    half = 0.5 / float(fps)
    step = 1 / float(fps)
    held, held_t, k = None, None, 0
    for t, frame in frames:
        if t0 is None:
            t0 = t
        while held is not None and (n is None or k < n) and t0 + k * step + half < t - EPS:
            yield held
            k += 1
        if n is not None and k >= n:
            return
        if held is None and t > t0 + step + half:  # the first frame comes too late for the cut
            raise PrepareError(PAST_END, f"no frame near {t0:.3f} s (first one at {t:.3f} s)")
        held, held_t = frame, t
    while held is not None and (n is None or k < n) and t0 + k * step <= held_t + half + EPS:
        yield held
        k += 1


# ---------------------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    data: bytes
    frames: int
    size: Tuple[int, int]  # (W, H) written
    turns: int  # counter-clockwise quarter turns applied (the display rotation)


def _encode(frames: Iterator[object], fps: Fraction, job: PrepareJob) -> Encoded:
    """H.264 mp4 of ``frames``, turned upright (their display rotation, see
    :mod:`videoattn.data.orientation`) and scaled to the job's short side."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return Encoded(b"", 0, (0, 0), 0)
    turns = quarter_turns(first)
    size = output_size(*upright_size(first.width, first.height, turns), job.short_side)
    buf = io.BytesIO()
    count = 0
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream(ENCODER, rate=fps, options=x264_options(job))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = job.gop
        time_base = Fraction(1) / fps
        for frame in itertools.chain([first], frames):
            image = upright_frame(frame, turns).reformat(size[0], size[1], "yuv420p", interpolation="AREA")
            image.pts, image.time_base = count, time_base
            out.mux(stream.encode(image))
            count += 1
        out.mux(stream.encode())
    return Encoded(buf.getvalue(), count, size, turns)


def x264_options(job: PrepareJob) -> dict:
    """libx264 options of ``job``: its preset and crf, one thread, CAVLC unless ``job.cabac``, and
    B-frames that no other frame references unless ``job.b_pyramid``.

    CAVLC instead of x264's default CABAC changes only the entropy coding: the same frames at the same
    crf, more bytes, but decoding (once per clip per epoch) is much cheaper. With x264's default
    pyramid some B-frames are references; without it none is, so the PyAV reader lets the decoder drop
    every B-frame a clip does not sample (``skip_frame``): a sparse clip (8 x 8) decodes about a third
    of its span. Both measured in docs/benchmarks.md (keyframe interval and entropy coding; decoders)."""
    options = {"preset": job.preset, "crf": str(job.crf), "threads": "1"}
    params = ([] if job.cabac else ["cabac=0"]) + ([] if job.b_pyramid else ["b-pyramid=none"])
    if params:
        options["x264-params"] = ":".join(params)
    return options


def _decode_plan(job: PrepareJob, stream, fps: Fraction) -> Tuple[Optional[float], Optional[int]]:
    """(grid start, frames) for the job; PrepareError for a span that cannot be cut."""
    if job.start is None:
        return None, None
    n = frame_count(job.start, job.end, fps)
    duration = float(stream.duration * stream.time_base) if stream.duration else None
    if duration is not None and job.start >= duration:
        raise PrepareError(PAST_END, f"span starts at {job.start:g} s, the video lasts {duration:.2f} s")
    return float(job.start), n


def encode_job(job: PrepareJob) -> Tuple[Encoded, Fraction]:
    """Decode, cut, turn upright, scale and encode ``job`` in memory -> (the encoded video, fps)."""
    container, stream, fps = _open_source(job.source)
    try:
        t0, n = _decode_plan(job, stream, fps)
        if min(stream.codec_context.width, stream.codec_context.height) <= 0:
            raise PrepareError(UNREADABLE, "video stream without a frame size")
        stats: dict = {}
        declared = stream.frames
        selected = select_frames(_frames(container, stream, fps, t0, stats), t0, fps, n)
        try:
            encoded = _encode(selected, fps, job)
        except av.FFmpegError as e:
            raise PrepareError(UNREADABLE, f"decoding or encoding failed: {_short(e)}") from None
    finally:
        container.close()
    decoded, count = stats.get("decoded", 0), encoded.frames
    if decoded == 0:
        raise PrepareError(ZERO_FRAMES, "no frame decodes")
    if count == 0:
        raise PrepareError(
            ZERO_FRAMES if n is None else PAST_END,
            "no frame decodes" if n is None else f"no frame in [{job.start:g}, {job.end:g}] s",
        )
    if n is not None and count < n - 1:
        raise PrepareError(
            PAST_END, f"video ends at {job.start + count / float(fps):.2f} s, span ends at {job.end:g} s"
        )
    if n is None and declared > 0 and decoded < declared - 1:
        raise PrepareError(UNREADABLE, f"truncated: {decoded} of the {declared} frames the container declares decode")
    return encoded, fps


# ------------------------------------------------------------------------------- write and verify
def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def verify_output(
    path: str, frames: int, size: Tuple[int, int], fps: Fraction, span: Optional[Tuple[float, float]]
) -> None:
    """Decode ``path`` fully with PyAV and open it with decord; PrepareError(VERIFY) unless it has
    ``frames`` frames (and, for a cut, ``(end - start) * fps`` within one frame) of ``size``."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            got = 0
            for frame in container.decode(stream):
                if (frame.width, frame.height) != tuple(size):
                    raise PrepareError(
                        VERIFY, f"frame {got} is {frame.width}x{frame.height}, expected {size[0]}x{size[1]}"
                    )
                got += 1
    except av.FFmpegError as e:
        raise PrepareError(VERIFY, f"the written file does not decode: {_short(e)}") from None
    if got != frames:
        raise PrepareError(VERIFY, f"{got} frames decode, {frames} were written")
    if span is not None and abs(got - (span[1] - span[0]) * fps) > 1 + EPS:
        raise PrepareError(VERIFY, f"{got} frames at {float(fps):.3f} fps for a {span[1] - span[0]:g} s span")
    import decord  # after av (decord's bundled FFmpeg must load second)

    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        reader[count - 1].asnumpy()
        del reader
    except Exception as e:  # decord raises DECORDError, RuntimeError, IndexError...
        raise PrepareError(VERIFY, f"decord cannot read the written file: {_short(e)}") from None
    if count != frames:
        raise PrepareError(VERIFY, f"decord counts {count} frames, {frames} were written")


def prepare_video(job: PrepareJob) -> PrepareResult:
    """Prepare one video (see the module docstring); never raises for a bad source or output."""
    started = time.perf_counter()
    try:
        encoded, fps = encode_job(job)
        count, size = encoded.frames, encoded.size
        span = (job.start, job.end) if job.start is not None else None
        try:
            with atomic_path(job.output) as tmp:
                _write_file(tmp, encoded.data)
                verify_output(tmp, count, size, fps, span)
        except OSError as e:
            raise PrepareError(OUTPUT, f"{job.output}: {e.strerror or e}", fatal=e.errno in FATAL_ERRNOS) from None
        st = os.stat(job.output)
    except PrepareError as e:
        return PrepareResult(job.output, False, e.reason, e.detail, e.fatal, seconds=time.perf_counter() - started)
    return PrepareResult(
        job.output,
        True,
        frames=count,
        fps=str(fps),
        width=size[0],
        height=size[1],
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        seconds=time.perf_counter() - started,
        rotated=encoded.turns * 90,
    )


def _short(e: BaseException, limit: int = 160) -> str:
    lines = f"{type(e).__name__}: {e}".strip().splitlines()
    msg = lines[0] if lines else type(e).__name__
    return msg if len(msg) <= limit else msg[:limit] + "..."
