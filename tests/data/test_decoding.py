"""decord decoding with guards: frame-accurate indices (webm/VP9 included), over-reported frame
counts, decode time limit, PyAV fallback, broken files."""
import os
import time

import av
import numpy as np
import pytest

from data_helpers import frame_indices, make_broken, patch_avi_frame_count
from videoattn.data import decoding
from videoattn.data.decoding import DecodeError, open_video
from videoattn.data.synthetic import make_indexed_video

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


def test_over_reported_frame_count_is_clamped_by_decord_guard(indexed, monkeypatch):
    """Fault injection: decord's reported count is 3x the real one (as a bad container header makes
    it); the reader must use the indexed packets and clamp, never ask decord past the end."""
    real_len = decoding.decord.VideoReader.__len__
    monkeypatch.setattr(decoding.decord.VideoReader, "__len__", lambda self: 3 * real_len(self))
    asked = []
    real_batch = decoding.decord.VideoReader.get_batch
    monkeypatch.setattr(decoding.decord.VideoReader, "get_batch",
                        lambda self, idx: asked.append(list(idx)) or real_batch(self, idx))
    video = open_video(indexed["h264.mp4"], timeout=30)
    assert video._reader.reported_frames == 270 and video.num_frames == 90
    assert frame_indices(video.get_frames([10, 89, 150, 269])) == [10, 89, 89, 89]
    assert max(max(a) for a in asked) == 89 and video.backend == "decord"


def test_over_reported_avi_header_pyav_path(indexed, tmp_path):
    """A real container over-reporting its length (AVI header says 200 frames, 90 exist)."""
    path = str(tmp_path / "over.avi")
    patch_avi_frame_count(indexed["mpeg4.avi"], path, 200)
    with av.open(path) as c:
        assert c.streams.video[0].frames == 200      # the header lie is visible to FFmpeg
    for backend in ("auto", "pyav"):
        video = open_video(path, backend=backend, timeout=30)
        assert frame_indices(video.get_frames([0, 89, 150, 199]))[:2] == [0, 89]
        assert frame_indices(video.get_frames([150, 199])) == [89, 89]


def test_decode_time_limit_then_fallback_then_broken(indexed, monkeypatch):
    """Fault injection: a decoder call that hangs is abandoned after the time limit."""
    monkeypatch.setattr(decoding.decord.VideoReader, "get_batch", lambda self, idx: time.sleep(30))
    start = time.monotonic()
    video = open_video(indexed["h264.mp4"], timeout=0.5)
    assert frame_indices(video.get_frames([7, 8])) == [7, 8] and video.backend == "pyav"   # fell back once
    monkeypatch.setattr(decoding.PyAVReader, "_decode", lambda self, idx: time.sleep(30))
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
    from videoattn.data.synthetic import encode_video

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
    from videoattn.benchmarks.data import pyslowfast_pyav_clip

    for idx in ([3, 11, 19, 27, 35, 43, 51, 59], [40, 48, 56, 64, 72, 80, 88, 89]):
        assert frame_indices(pyslowfast_pyav_clip(indexed[name], np.array(idx))) == idx
