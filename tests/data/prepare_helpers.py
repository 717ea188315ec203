"""Helpers for the prepare_data / check_data tests: long frame-indexed sources, broken files, faults.

The fault functions stand in for ``prepare_video`` inside the spawned worker processes (they are
importable module-level functions, so ``spawn`` can pickle them by name): one hangs, one makes the
output disk "full" (a write raising ENOSPC). Everything else is real: real encoded videos, real
worker processes, real kills.
"""
from __future__ import annotations

import errno
import os
import time
from fractions import Fraction

import av
import numpy as np

from videoattn.datasets.synthetic import make_indexed_video, read_frame_index

# x264's own defaults (keyint 250, scene cuts), as a YouTube download: no "g" option
RAW_X264 = {"preset": "veryfast", "crf": "18", "threads": "1"}  # 3 B-frames, as YouTube encodes


def long_indexed_video(path: str, seconds: float, fps, width: int = 160, height: int = 96) -> int:
    """A ``seconds`` long H.264 video whose frame i shows i (barcode); returns its frame count."""
    n = int(round(seconds * fps))
    make_indexed_video(path, n, fps, width, height, "libx264", RAW_X264)
    return n


def decoded_indices(path: str, source_size=None) -> list:
    """Frame indices (barcodes) of every frame of ``path``, read at ``source_size`` (W, H) if given."""
    out = []
    with av.open(path) as c:
        for frame in c.decode(video=0):
            if source_size:
                frame = frame.reformat(source_size[0], source_size[1])
            out.append(read_frame_index(frame.to_ndarray(format="rgb24")))
    return out


def keyframe_positions(path: str) -> list:
    with av.open(path) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None)
    with av.open(path) as c:
        s = c.streams.video[0]
        keys = {p.pts for p in c.demux(s) if p.pts is not None and p.is_keyframe}
    return [i for i, p in enumerate(pts) if p in keys]


def h264_uses_cabac(path: str) -> bool:
    """The entropy_coding_mode_flag of an mp4's H.264 picture parameter set (read from its avcC
    extradata: after pic_parameter_set_id and seq_parameter_set_id, two Exp-Golomb numbers)."""
    with av.open(path) as c:
        data = bytes(c.streams.video[0].codec_context.extradata)
    pos = 6
    for _ in range(data[5] & 0x1F):  # sequence parameter sets
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    assert data[pos] >= 1, "no picture parameter set"
    pps = data[pos + 3:pos + 3 + int.from_bytes(data[pos + 1:pos + 3], "big")]
    bits = "".join(f"{b:08b}" for b in pps[1:8])  # after the NAL header
    i = 0
    for _ in range(2):  # ue(v): z zeros, a one, z bits
        z = bits.index("1", i) - i
        i += 2 * z + 1
    return bits[i] == "1"


def video_with_audio(path: str, seconds: float = 2.0, fps: int = 25, size=(128, 96), audio_only: bool = False) -> None:
    """An mp4 with an AAC track (and a video track unless ``audio_only``)."""
    rate = 16000
    with av.open(path, "w", format="mp4") as out:
        vs = None
        if not audio_only:
            vs = out.add_stream("libx264", rate=fps, options=dict(RAW_X264))
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        aus = out.add_stream("aac", rate=rate)
        for i in range(int(seconds * fps)):
            if vs is not None:
                img = np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8)
                out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        samples = np.zeros((1, int(seconds * rate)), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        out.mux(aus.encode(frame))
        out.mux(aus.encode(None))
        if vs is not None:
            out.mux(vs.encode())


def vfr_indexed_video(path: str, times: list, width: int = 160, height: int = 96) -> None:
    """An mp4 whose frame i (barcode i) is shown at ``times[i]`` seconds (variable frame rate)."""
    from videoattn.datasets.synthetic import draw_frame_index

    with av.open(path, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=30, options=dict(RAW_X264))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.full((height, width, 3), 120, np.uint8)
            draw_frame_index(img, i)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            out.mux(s.encode(frame))
        out.mux(s.encode())


# ----------------------------------------------------------------------- faults (run in workers)
def hang_or_prepare(job):
    """Hang (after leaving a half-written temporary file) for sources named '*hang*'."""
    from videoattn.datasets.prepare import prepare_video

    if "hang" in os.path.basename(job.source):
        folder, name = os.path.split(job.output)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f".{name}.partial.tmp"), "wb") as f:
            f.write(b"\0" * 1000)
        time.sleep(3600)
    return prepare_video(job)


def enospc_or_prepare(job):
    """Outputs named '*full*' fail to write half-way with ENOSPC; the others are prepared."""
    import videoattn.datasets.prepare as prepare

    if "full" in os.path.basename(job.output):
        def write_half_then_fail(path, data):
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        prepare._write_file = write_half_then_fail
    return prepare.prepare_video(job)


def zero_frame_video(path: str) -> None:
    """An mp4 whose header declares a video stream of 50 frames and whose data is cut off before the
    first one (a download that stopped right after the faststart header)."""
    src = path + ".src.mp4"
    make_indexed_video(src, 50, 25, 96, 64, "libx264", dict(RAW_X264))
    full = path + ".faststart.mp4"
    with av.open(src) as c, av.open(full, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(c.streams.video[0])
        for packet in c.demux(c.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = open(full, "rb").read()
    open(path, "wb").write(data[: data.find(b"mdat") + 8])
    os.remove(src)
    os.remove(full)
