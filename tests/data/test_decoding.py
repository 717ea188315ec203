"""decord decoding with guards: frame-accurate indices (webm/VP9 included), over-reported frame
counts, decode time limit, PyAV fallback, broken files."""
import os
import sys
import time

import av
import numpy as np
import pytest

from data_helpers import frame_indices, make_broken, patch_avi_frame_count
from videoattn.data import decoding
from videoattn.data.decoding import DecodeError, TruncatedVideoError, open_video
from videoattn.data.pyav_reader import PyAVReader
from videoattn.datasets.synthetic import make_indexed_video
from videokit import cut_file, decodable_indexed_frames

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")

INDICES = [5, 80, 3, 40, 89, 0, 60, 61, 62, 17]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Videos whose frame i shows i as a barcode: H.264 mp4, VP9 webm, VP8 webm, MPEG-4 avi."""
    folder = tmp_path_factory.mktemp("indexed")
    paths = {}
    for name, codec, options in [("h264.mp4", None, None), ("vp9.webm", None, None),
                                 ("vp8.webm", "libvpx", {"deadline": "realtime", "cpu-used": "8"}),
                                 ("mpeg4.avi", None, None)]:
        paths[name] = str(folder / name)
        make_indexed_video(paths[name], 90, 30, codec=codec, options=options)
    return paths


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "vp8.webm", "mpeg4.avi"])
def test_frame_accurate_random_access(indexed, name):
    video = open_video(indexed[name], num_threads=1, timeout=30)
    assert video.backend == "decord" and video.num_frames == 90 and video.fps == pytest.approx(30)
    frames = video.get_frames(INDICES)
    assert frames.dtype.is_floating_point is False and tuple(frames.shape) == (len(INDICES), 64, 96, 3)
    assert frame_indices(frames) == INDICES


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "mpeg4.avi"])
def test_pyav_reader_matches_decord(indexed, name):
    video = open_video(indexed[name], backend="pyav")
    assert frame_indices(video.get_frames(sorted(INDICES))) == sorted(INDICES)


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "vp8.webm", "mpeg4.avi"])
def test_pyav_reader_clips_late_in_the_video(indexed, name):
    """Clips that start late: the reader drops non-reference frames of the pre-roll undecoded,
    and must still return exactly the frames asked for."""
    for start in (1, 2, 9, 30, 47, 61, 80):
        idx = [min(start + 4 * k, 89) for k in range(8)]
        video = open_video(indexed[name], backend="pyav")
        assert frame_indices(video.get_frames(idx)) == idx, start
        video.close()


def test_all_synthetic_videos_decode_with_decord(synthetic_root):
    for split in ("train", "val"):
        for line in open(os.path.join(synthetic_root, f"{split}.txt")):
            path = os.path.join(synthetic_root, line.split()[0])
            video = open_video(path, timeout=30)
            with av.open(path) as c:      # independent frame count: PyAV decodes every frame
                size = (c.streams.video[0].height, c.streams.video[0].width)
                count = sum(1 for _ in c.decode(video=0))
            assert video.backend == "decord" and video.num_frames == count
            assert tuple(video.get_frames([0, count - 1]).shape) == (2, *size, 3)


def test_over_reported_frame_count_is_read_with_pyav_not_decord(indexed, monkeypatch):
    """Fault injection: decord's reported count is 3x the packets it indexed (as a bad container
    header or a file cut short makes it); decord is never asked for frames (``get_batch`` past the
    last real packet can loop forever): PyAV reads the file."""
    real_len = decoding.decord.VideoReader.__len__
    monkeypatch.setattr(decoding.decord.VideoReader, "__len__", lambda self: 3 * real_len(self))
    asked = []
    real_batch = decoding.decord.VideoReader.get_batch
    monkeypatch.setattr(decoding.decord.VideoReader, "get_batch",
                        lambda self, idx: asked.append(list(idx)) or real_batch(self, idx))
    video = open_video(indexed["h264.mp4"], timeout=30)
    assert video.backend == "pyav" and "declares 270 frames, only 90 packets are indexed" in video._errors[0]
    assert video.num_frames == 90 and frame_indices(video.get_frames([10, 89])) == [10, 89] and asked == []


def test_over_reported_avi_header_pyav_path(indexed, tmp_path):
    """A real container over-reporting its length (AVI header says 200 frames, 90 exist): frames
    past the 90th are never invented; the error says how many decode, and the reader then
    serves exactly those."""
    path = str(tmp_path / "over.avi")
    patch_avi_frame_count(indexed["mpeg4.avi"], path, 200)
    with av.open(path) as c:
        assert c.streams.video[0].frames == 200      # the header lie is visible to FFmpeg
    for backend in ("auto", "pyav"):
        video = open_video(path, backend=backend, timeout=30)
        assert video.declared_frames == 200 and video.backend == "pyav"   # decord indexed 90: PyAV reads it
        assert frame_indices(video.get_frames([0, 40, 89])) == [0, 40, 89]
        with pytest.raises(TruncatedVideoError) as e:
            video.get_frames([0, 89, 150, 199])
        assert (e.value.decoded_frames, e.value.declared_frames) == (90, 200) and video.num_frames == 90
        assert "90 of 200 declared frames decode (3.00 s of 6.67 s)" in str(e.value)
        with pytest.raises(TruncatedVideoError):
            video.get_frames([120])                  # known now: no decoding needed to refuse it
        assert frame_indices(video.get_frames(list(range(80, 90)))) == list(range(80, 90))


@pytest.mark.parametrize("fraction", [0.5, 0.6, 0.8])
@pytest.mark.parametrize("ext", ["mp4", "webm", "avi", "mkv"])
def test_file_cut_short_serves_only_frames_that_decode(tmp_path, ext, fraction):
    """A 150-frame video cut at ``fraction`` of its bytes (the mp4 with its index first,
    ``faststart``, so its header still declares 150 frames): asking past the real end raises
    TruncatedVideoError with the count that decodes (checked against a plain PyAV decode loop
    reading the barcodes), and every frame served shows its own index (no repeats). (decord
    alone indexes a cut AVI's damaged last packet as a frame; asking for ``declared_frames``, as
    feature extraction does, or for a frame past decord's count moves the file to PyAV.)"""
    full, cut = str(tmp_path / f"full.{ext}"), str(tmp_path / f"cut.{ext}")
    make_indexed_video(full, 150, 30, codec="libx264" if ext == "mkv" else None,   # mkv: H.264 with B-frames
                       container_options={"movflags": "+faststart"} if ext == "mp4" else None)
    cut_file(full, cut, fraction)
    real = decodable_indexed_frames(cut)
    assert 10 < real < 150
    for backend in ("auto", "pyav"):
        video = open_video(cut, backend=backend, timeout=30)
        assert video.declared_frames == 150
        with pytest.raises(TruncatedVideoError) as e:
            video.get_frames(list(range(0, 150, 7)))
        assert (e.value.decoded_frames, e.value.declared_frames, video.num_frames) == (real, 150, real)
        assert frame_indices(video.get_frames(list(range(real)))) == list(range(real))
        late = [real - 9, real - 5, real - 1]                   # a clip ending at the last real frame
        assert frame_indices(open_video(cut, backend=backend, timeout=30).get_frames(late)) == late
        video = open_video(cut, backend=backend, timeout=30)
        assert video.declared_frames == 150 and video.backend == "pyav"
        with pytest.raises(TruncatedVideoError, match=f"only {real} of 150 declared frames decode"):
            video.get_frames([real - 1, real])


def test_decode_time_limit_then_fallback_then_broken(indexed, monkeypatch):
    """Fault injection: a decoder call that hangs is abandoned after the time limit."""
    monkeypatch.setattr(decoding.decord.VideoReader, "get_batch", lambda self, idx: time.sleep(30))
    start = time.monotonic()
    video = open_video(indexed["h264.mp4"], timeout=0.5)
    assert frame_indices(video.get_frames([7, 8])) == [7, 8] and video.backend == "pyav"   # fell back once
    monkeypatch.setattr(PyAVReader, "_decode", lambda self, idx: time.sleep(30))
    video = open_video(indexed["h264.mp4"], timeout=0.5)
    with pytest.raises(DecodeError, match="timed out after 0.5 s.*timed out after 0.5 s"):
        video.get_frames([7, 8])
    assert time.monotonic() - start < 20   # not a speed assertion: the 30 s hangs were abandoned
    monkeypatch.undo()
    assert frame_indices(open_video(indexed["h264.mp4"], timeout=5).get_frames([3])) == [3]  # worker still usable


def test_decord_open_failure_falls_back_to_pyav(indexed, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("injected decord failure")
    monkeypatch.setattr(decoding.decord, "VideoReader", broken)
    video = open_video(indexed["vp9.webm"])
    assert video.backend == "pyav" and frame_indices(video.get_frames([0, 45, 89])) == [0, 45, 89]


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "zero_frames", "missing"])
def test_broken_files_raise_decode_error(indexed, tmp_path, kind):
    path = str(tmp_path / f"{kind}.mp4")
    if kind != "missing":
        make_broken(path, kind, indexed["h264.mp4"])
    with pytest.raises(DecodeError) as e:
        video = open_video(path, timeout=10)
        video.get_frames(list(range(0, 90, 8)))
    assert e.value.path == path and e.value.reason


def test_real_decord_failure_width_72_falls_back_to_pyav(tmp_path):
    """decord 0.6 fails on some small widths (72 px: 'DECORDArrayCopyFromTo: The size must exactly
    match'); such a file must still decode, via PyAV, with the right frames."""
    from videoattn.datasets.synthetic import encode_video

    path = str(tmp_path / "w72.mp4")
    frames = np.zeros((30, 48, 72, 3), np.uint8)
    frames[:] = (np.arange(30) * 8)[:, None, None, None]          # frame i has grey level 8 i
    encode_video(path, frames, 30)
    video = open_video(path, timeout=30)
    got = video.get_frames([0, 10, 29])
    assert tuple(got.shape) == (3, 48, 72, 3) and video.backend == "pyav"
    assert "decord cannot decode" in video._errors[0]
    assert np.abs(got.float().mean(dim=(1, 2, 3)).numpy() - [0, 80, 232]).max() < 4


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "mpeg4.avi"])
def test_pyslowfast_baseline_reads_the_same_frames(indexed, name):
    """The data benchmark's PySlowFast baseline must decode the clip it is compared on."""
    sys.path.insert(0, TOOLS)
    from benchmarks.pyslowfast_decoder import pyslowfast_pyav_clip

    for idx in ([3, 11, 19, 27, 35, 43, 51, 59], [40, 48, 56, 64, 72, 80, 88, 89]):
        assert frame_indices(pyslowfast_pyav_clip(indexed[name], np.array(idx))) == idx
