"""Decoders side by side for ``tools/benchmark.py data``: exactness, clips per CPU-second, memory.

The decoders (:data:`MODES`), each opening the file, reading one clip and closing it, as the loader
does per clip:

* ``decord``: the venv's ``import decord`` (decord 0.6.0, FFmpeg 4.1), its ``get_batch`` (what our
  decord reader calls; here without the reader's PyAV fallback, so a failure is decord's own);
* ``decord2``: decord2 3.4 (FFmpeg 8.1), a maintained fork with the same ``import decord`` package,
  so it cannot share the venv's site-packages: ``make venv`` installs it into a side folder
  (:data:`DECORD2_DIR`) and every decord2 measurement runs in a child process whose ``PYTHONPATH``
  starts there;
* ``pyav``: our PyAV reader (:mod:`videoattn.data.pyav_reader`, FFmpeg 8.1): seek to the keyframe
  before the clip, decode forward to its last frame, the decoder dropping the non-reference frames
  the clip does not sample; ``pyav, no skip`` decodes them all; ``pyav, SLICE/FRAME/AUTO x2``:
  FFmpeg's decoder threads.

Exactness: the frames a decoder returns for the clips our protocols draw (:func:`protocol_clips`),
against a sequential PyAV decode of every frame (:func:`reference`): the same frame by count (the
i-th frame shown; what decord indexes) and by time (the frame on screen at ``i / fps`` from the
first frame; what the PyAV reader and ``prepare_data`` use). The two differ only for a variable
frame rate. The test videos (:func:`make_kinds`) carry their frame index as a barcode, so a wrong
seek shows as a wrong index, not only as a pixel difference.

    python -m benchmarks.decoders TASK.json    # the child process (tools/ on PYTHONPATH; see run())
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Dict, Iterator, List, Sequence, Tuple

import av  # before decord: decord's bundled FFmpeg breaks PyAV's libvpx otherwise
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DECORD2_DIR = os.environ.get("VIDEOATTN_DECORD2_DIR") or os.path.join(sys.prefix, "decord2")
Clips = List[Tuple[str, np.ndarray]]


@dataclass(frozen=True)
class Mode:
    name: str
    library: str  # "decord" (whichever ``import decord`` finds) or "pyav"
    side: str = ""  # a folder put first on the child's PYTHONPATH ("": this process)
    skip: bool = True  # pyav: drop the non-reference frames the clip does not sample
    thread_type: str = "NONE"  # pyav: FFmpeg decoder threads
    threads: int = 1


MODES = {
    m.name: m
    for m in [
        Mode("decord", "decord"),
        Mode("decord2", "decord", side=DECORD2_DIR),
        Mode("pyav", "pyav"),
        Mode("pyav, no skip", "pyav", skip=False),
        Mode("pyav, SLICE x2", "pyav", thread_type="SLICE", threads=2),
        Mode("pyav, FRAME x2", "pyav", thread_type="FRAME", threads=2),
        Mode("pyav, AUTO x2", "pyav", thread_type="AUTO", threads=2),
    ]
}


def decord2_missing() -> str:
    """Why decord2 cannot run here ("" if it can)."""
    if not os.path.isfile(os.path.join(DECORD2_DIR, "decord", "__init__.py")):
        return f"decord2 is not installed in {DECORD2_DIR} (make venv installs it; VIDEOATTN_DECORD2_DIR overrides)"
    return ""


# ------------------------------------------------------------------------------------- readers
def decode_clip(mode: Mode, path: str, idx: Sequence[int]) -> np.ndarray:
    """Open, read one clip, close, as the loader does per clip -> uint8 (T, H, W, 3): our PyAV reader,
    or decord's own ``VideoReader.get_batch`` (what our decord reader calls, without its PyAV
    fallback, so a decord failure is the decoder's: and no torch in a decord2 child)."""
    if mode.library == "pyav":
        from videoattn.data.pyav_reader import PyAVReader

        reader = PyAVReader(path, skip=mode.skip, thread_type=mode.thread_type, threads=mode.threads)
        try:
            return reader.get_frames(list(idx)).numpy()
        finally:
            reader.close()
    import decord

    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    try:
        return vr.get_batch([int(i) for i in idx]).asnumpy()
    finally:
        del vr


def library_version(mode: Mode) -> str:
    if mode.library == "pyav":
        return f"PyAV {av.__version__}"
    import decord

    return f"{'decord2' if mode.side else 'decord'} {decord.__version__}"


# ----------------------------------------------------------------------------------- exactness
@dataclass
class Reference:
    """Every frame of a video decoded in order (PyAV, no seek, one thread)."""

    frames: np.ndarray  # uint8 (N, H, W, 3)
    by_time: np.ndarray  # int64 (N,): the frame on screen at index k / fps (k < N), from the first frame's time


def reference(path: str) -> Reference:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        fps, tb = float(stream.average_rate), stream.time_base
        frames, pts = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
    index = np.round((np.asarray(pts) - pts[0]) * float(tb) * fps).astype(np.int64)  # time 0: the first frame
    by_time = np.clip(np.searchsorted(index, np.arange(len(frames)), side="right") - 1, 0, None)
    return Reference(np.stack(frames), by_time)


def protocol_clips(
    num_frames: int, fps: float, per_recipe: int = 6, views: int = 10, seed: int = 0
) -> List[np.ndarray]:
    """Clips our protocols draw on a video of ``num_frames`` at ``fps``, for 8 x 8 and 32 x 2 at 30 fps:
    ``per_recipe`` random training clips each of PySlowFast's and ours, PySlowFast's ``views`` test
    views and our 3."""
    from videoattn.data.protocol_temporal import pyslowfast_clip_indices, videoattn_clip_indices

    rng, clips = random.Random(seed), []
    for t, rate in ((8, 8), (32, 2)):
        for _ in range(per_recipe):
            clips.append(pyslowfast_clip_indices(num_frames, fps, t, rate, 30.0, rng=rng))
            clips.append(
                videoattn_clip_indices(num_frames, fps, t, rate, 30.0, rng=np.random.default_rng(rng.randrange(2**32)))
            )
        clips += [pyslowfast_clip_indices(num_frames, fps, t, rate, 30.0, v, views) for v in range(views)]
        clips += [videoattn_clip_indices(num_frames, fps, t, rate, 30.0, v, 3) for v in range(3)]
    return clips


@dataclass
class Exactness:
    decoder: str
    kind: str
    clips: int = 0
    frames: int = 0
    equal: int = 0  # bit-equal to the reference frame by count
    equal_by_time: int = 0  # bit-equal to the reference frame by time
    wrong_index: int = 0  # barcode differs from the reference frame's (by count)
    max_diff: int = 0  # max abs pixel difference to the reference (by count)
    error: str = ""

    def verdict(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.equal == self.frames:
            return "equal"
        if self.equal_by_time == self.frames:
            return "equal by time (not by count)"
        return (
            f"NOT equal: {self.frames - self.equal} of {self.frames} frames differ, {self.wrong_index} "
            f"with a wrong index, max diff {self.max_diff}"
        )


def kind_clips(path: str, per_recipe: int = 6, views: int = 10) -> List[List[int]]:
    """:func:`protocol_clips` for the video at ``path`` (its frame count and average rate)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        count = stream.frames or sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate)
    return [idx.tolist() for idx in protocol_clips(count, fps, per_recipe, views)]


def exactness_rows(mode: Mode, kinds: Dict[str, str], per_recipe: int = 6, views: int = 10) -> List[Exactness]:
    """:func:`exactness` of ``mode`` on each kind's video, with the clips of :func:`kind_clips`."""
    clips = {kind: kind_clips(path, per_recipe, views) for kind, path in kinds.items()}
    return run(mode, "exactness", kinds=kinds, kind_clips=clips)


def exactness(mode: Mode, kind: str, path: str, clips: Sequence[Sequence[int]]) -> Exactness:
    """``clips`` (frame indices) read by ``mode`` against the reference decode of ``path``."""
    from videoattn.datasets.synthetic import read_frame_index

    ref = reference(path)
    row = Exactness(mode.name, kind)
    truth = [read_frame_index(f) for f in ref.frames]
    try:
        for idx in map(np.asarray, clips):
            got = decode_clip(mode, path, idx)
            want, want_t = ref.frames[idx], ref.frames[ref.by_time[idx]]
            same = [np.array_equal(g, w) for g, w in zip(got, want)]
            row.clips += 1
            row.frames += len(idx)
            row.equal += sum(same)
            row.equal_by_time += sum(np.array_equal(g, w) for g, w in zip(got, want_t))
            row.wrong_index += sum(read_frame_index(g) != truth[i] for g, i in zip(got, idx))
            row.max_diff = max(row.max_diff, int(np.abs(got.astype(np.int16) - want).max()))
    except Exception as e:  # a decoder that fails on a kind is a row of the table, not a crash
        row.error = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return row


# ---------------------------------------------------------------------------------- test videos
KIND_NAMES = (
    "H.264 B-frames",
    "VP9",
    "MPEG-4 part 2",
    "MPEG-4 part 2 B-frames",
    "H.264 VFR",
    "prepared",
    "prepared from VFR",
)


def vfr_video(path: str, times: Sequence[float], width: int, height: int = 64) -> None:
    """An H.264 mp4 (x264 defaults: B-frames; a keyframe every 30 frames) whose frame i (barcode i)
    is shown at ``times[i]`` seconds."""
    from videoattn.datasets.synthetic import draw_frame_index

    with av.open(path, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=30, options={"threads": "1", "x264-params": "keyint=30"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.full((height, width, 3), 60 + (5 * i) % 120, np.uint8)
            draw_frame_index(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            out.mux(s.encode(frame))
        out.mux(s.encode())


def make_kinds(folder: str, frames: int = 120, width: int = 128) -> Dict[str, str]:
    """Frame-indexed test videos of every kind in :data:`KIND_NAMES` (``width`` x 64, 30 fps on
    average, a keyframe every 30 frames, so clips seek) -> {kind: path}. 128: decord 0.6 fails on
    widths 16, 24, 48, 72 and decord2 3.4 on 16, 24, 32, 48, 96, 144 (of 16..192 in steps of 8)."""
    from videoattn.datasets.prepare import PrepareJob, prepare_video
    from videoattn.datasets.synthetic import FORMATS, make_indexed_video

    vp9 = dict(next(o for e, _, o in FORMATS if e == "webm"), g="30")
    names = ("h264.mp4", "vp9.webm", "mpeg4.avi", "mpeg4_b.avi", "vfr.mp4")
    paths = {k: os.path.join(folder, n) for k, n in zip(KIND_NAMES, names)}
    make_indexed_video(paths["H.264 B-frames"], frames, 30, width, codec="libx264", options={"threads": "1", "g": "30"})
    make_indexed_video(paths["VP9"], frames, 30, width, codec="libvpx-vp9", options=vp9)
    mpeg4 = {"qscale": "3", "g": "30", "threads": "1"}
    make_indexed_video(paths["MPEG-4 part 2"], frames, 30, width, codec="mpeg4", options=mpeg4)
    make_indexed_video(paths["MPEG-4 part 2 B-frames"], frames, 30, width, codec="mpeg4", options=dict(mpeg4, bf="2"))
    half = frames // 3  # a third of the frames at 20 fps, the rest at 40 fps: 30 fps on average
    vfr_video(
        paths["H.264 VFR"], [i / 20 for i in range(half)] + [half / 20 + i / 40 for i in range(frames - half)], width
    )
    for kind, src in (("prepared", "H.264 B-frames"), ("prepared from VFR", "H.264 VFR")):
        paths[kind] = os.path.join(folder, f"prepared_{os.path.basename(paths[src])}")
        result = prepare_video(PrepareJob(paths[src], paths[kind]))
        if not result.ok:
            raise RuntimeError(f"prepare_video failed on {paths[src]}: {result.reason}: {result.detail}")
    return paths


# ------------------------------------------------------------------------------- speed, memory
@dataclass
class Rate:
    cpu: float = float("inf")  # CPU seconds per clip (best round)
    wall: float = float("inf")  # wall seconds per clip (same round)

    @property
    def per_core(self) -> float:
        return 1.0 / self.cpu

    @property
    def per_second(self) -> float:
        return 1.0 / self.wall


def timed(batches: Iterator[int], clips: int, warmup: int = 1) -> Rate:
    """Seconds per clip over at least ``clips`` clips of ``batches`` (clips per step), after ``warmup`` steps."""
    for _ in range(warmup):
        next(batches)
    cpu, wall, seen = time.process_time(), time.perf_counter(), 0
    while seen < clips:
        seen += next(batches)
    return Rate((time.process_time() - cpu) / seen, (time.perf_counter() - wall) / seen)


def clip_stream(mode: Mode, clips: Clips) -> Iterator[int]:
    """The decode-only bound of ``mode``: open, read exactly the clip's frames, close; forever."""
    while True:
        for path, idx in clips:
            decode_clip(mode, path, idx)
            yield 1


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def rss_over(mode: Mode, clips: Clips, marks: Sequence[int]) -> Dict[int, float]:
    """Resident MiB of this process after each mark (clips decoded by ``mode``, cycling ``clips``)."""
    out, stream, seen = {}, clip_stream(mode, clips), 0
    for mark in sorted(marks):
        while seen < mark:
            seen += next(stream)
        out[mark] = rss_mb(os.getpid())
    return out


# ------------------------------------------------------------------------------ child processes
def run(mode: Mode, task: str, **kwargs):
    """``task`` for ``mode``: "exactness" (``kinds={kind: path}``, ``kind_clips={kind: clips}`` ->
    [Exactness], see :func:`exactness`), "version" (the library's), "speed" (``clips``,
    ``n`` -> Rate) or "rss" (``clips``, ``marks`` -> {mark: MiB}); here, or in a child process when the
    mode has a side folder (decord2) or the task is "rss" (a fresh process: its memory is the
    decoder's)."""
    if not mode.side and task != "rss":
        return _task(mode, task, kwargs)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"mode": mode.name, "task": task, "kwargs": _jsonable(kwargs)}, f)
    try:
        path = [p for p in (mode.side, REPO, os.path.join(REPO, "tools")) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1")
        r = subprocess.run(
            [sys.executable, "-m", "benchmarks.decoders", f.name], env=env, capture_output=True, text=True, check=False
        )
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        raise RuntimeError(
            f"{mode.name} child failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode}"
        )
    return _from_json(task, json.loads(r.stdout.strip().splitlines()[-1]))


def _task(mode: Mode, task: str, kw: dict):
    if task == "exactness":
        return [exactness(mode, kind, path, kw["kind_clips"][kind]) for kind, path in kw["kinds"].items()]
    if task == "version":
        return {"version": library_version(mode)}
    clips = [(p, np.asarray(i)) for p, i in kw["clips"]]
    if task == "speed":
        return timed(clip_stream(mode, clips), kw["n"])
    return rss_over(mode, clips, kw["marks"])


def _jsonable(kwargs: dict) -> dict:
    return {k: [(p, np.asarray(i).tolist()) for p, i in v] if k == "clips" else v for k, v in kwargs.items()}


def _from_json(task: str, value):
    if task == "exactness":
        return [Exactness(**row) for row in value]
    if task == "speed":
        return Rate(**value)
    if task == "version":
        return value["version"]
    return {int(k): v for k, v in value.items()}


def _child(task_file: str) -> None:
    with open(task_file) as f:
        spec = json.load(f)
    result = _task(MODES[spec["mode"]], spec["task"], spec["kwargs"])
    if isinstance(result, list):
        result = [asdict(row) for row in result]
    print(json.dumps(result if isinstance(result, (dict, list)) else asdict(result)))


if __name__ == "__main__":
    _child(sys.argv[1])
