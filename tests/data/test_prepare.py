"""prepare_video on real encoded long videos: frame-accurate cuts, geometry, keyframes, broken sources."""
import math
import os
from fractions import Fraction

import av
import pytest
from av.video.frame import PictureType

from prepare_helpers import (decoded_indices, h264_uses_cabac, keyframe_positions, long_indexed_video,
                             vfr_indexed_video, video_with_audio, zero_frame_video)
from videoattn.datasets.prepare import (NO_VIDEO, OUTPUT, PAST_END, UNREADABLE, ZERO_FRAMES, PrepareJob, output_size,
                                    prepare_video)


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    """20 s at 30 fps, 12 s at 25 fps and 12 s at 30000/1001 fps, x264's default keyframe interval."""
    root = tmp_path_factory.mktemp("long")
    paths = {}
    for name, seconds, fps in [("v30", 20, 30), ("v25", 12, 25), ("ntsc", 12, Fraction(30000, 1001))]:
        paths[name] = str(root / f"{name}.mp4")
        long_indexed_video(paths[name], seconds, fps)
    return paths


def _no_temporaries(folder) -> bool:
    return not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_sources_look_like_raw_downloads(long_videos):
    keys = keyframe_positions(long_videos["v30"])
    assert keys[0] == 0 and len(keys) <= 4, keys  # a clip late in a GOP decodes ~200 frames
    with av.open(long_videos["v30"]) as c:
        assert c.streams.video[0].codec_context.has_b_frames  # frames reordered: decode order != display order


@pytest.mark.parametrize("name,fps,start,end", [
    ("v30", 30, 0, 3), ("v30", 30, 10, 13), ("v30", 30, 17, 20), ("v30", 30, 7.5, 9),
    ("v25", 25, 2, 12), ("ntsc", Fraction(30000, 1001), 3, 10)])
def test_cut_is_frame_accurate(long_videos, tmp_path, name, fps, start, end):
    out = str(tmp_path / "cut.mp4")
    r = prepare_video(PrepareJob(long_videos[name], out, start, end, short_side=96, gop=16))
    assert r.ok, r
    n = math.ceil((end - start) * fps - 1e-9)
    first = round(start * fps)
    assert decoded_indices(out) == list(range(first, first + n))
    assert r.frames == n and Fraction(r.fps) == fps


def test_cut_to_the_last_frame_and_past_it(long_videos, tmp_path):
    ok = prepare_video(PrepareJob(long_videos["v25"], str(tmp_path / "a.mp4"), 11, 12, short_side=96))
    assert ok.ok and decoded_indices(ok.output)[-1] == 299
    for start, end in [(11, 13), (12, 14), (30, 40)]:
        out = str(tmp_path / f"past_{start}.mp4")
        r = prepare_video(PrepareJob(long_videos["v25"], out, start, end, short_side=96))
        assert not r.ok and r.reason == PAST_END, r
        assert not os.path.exists(out) and _no_temporaries(tmp_path)


def test_whole_file_keeps_every_frame(long_videos, tmp_path):
    r = prepare_video(PrepareJob(long_videos["v25"], str(tmp_path / "w.mp4"), short_side=96))
    assert r.ok and decoded_indices(r.output) == list(range(300))


def _decoded_types(path: str, skip: str) -> list:
    with av.open(path) as c:
        s = c.streams.video[0]
        s.codec_context.skip_frame = skip
        return [PictureType(f.pict_type).name for f in c.decode(s)]


def test_b_frames_are_unreferenced_so_a_reader_can_skip_them(long_videos, tmp_path):
    """Prepared files keep B-frames (a third of the file here) but no frame references one: the
    decoder told to skip non-reference frames decodes exactly the I- and P-frames. With x264's default
    pyramid (``b_pyramid=True``, the format before) it must still decode some B-frames."""
    out, pyramid = str(tmp_path / "o.mp4"), str(tmp_path / "pyramid.mp4")
    assert prepare_video(PrepareJob(long_videos["v30"], out, 0, 4, short_side=96)).ok
    assert prepare_video(PrepareJob(long_videos["v30"], pyramid, 0, 4, short_side=96, b_pyramid=True)).ok
    every, refs = _decoded_types(out, "DEFAULT"), _decoded_types(out, "NONREF")
    assert len(every) == 120 and every.count("B") >= 20, every
    assert refs == [t for t in every if t != "B"]
    assert "B" in _decoded_types(pyramid, "NONREF")


def test_scaled_output_geometry_keyframes_and_no_audio(tmp_path):
    src = str(tmp_path / "landscape.mp4")
    long_indexed_video(src, 3, 30, width=320, height=180)
    out = str(tmp_path / "o.mp4")
    r = prepare_video(PrepareJob(src, out, 0, 3, short_side=120, gop=8))
    assert r.ok and (r.width, r.height) == (214, 120)
    keys = keyframe_positions(out)
    assert keys[0] == 0 and max(b - a for a, b in zip(keys + [90], keys[1:] + [90])) <= 8, keys
    # scaled back to the source size the barcodes still read: frames 0..89 in order
    assert decoded_indices(out, (320, 180)) == list(range(90))
    assert not h264_uses_cabac(out) and h264_uses_cabac(src)   # CAVLC by default (the source: x264's CABAC)
    cabac = str(tmp_path / "cabac.mp4")
    assert prepare_video(PrepareJob(src, cabac, 0, 3, short_side=120, gop=8, cabac=True)).ok and h264_uses_cabac(cabac)
    with_audio = str(tmp_path / "audio.mp4")
    video_with_audio(with_audio)
    r = prepare_video(PrepareJob(with_audio, str(tmp_path / "a.mp4"), short_side=64))
    with av.open(r.output) as c:
        assert [s.type for s in c.streams] == ["video"] and c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_output_size_rules():
    assert output_size(640, 360, 320) == (568, 320)
    assert output_size(360, 640, 320) == (320, 568)
    assert output_size(1920, 1080, 256) == (456, 256)
    assert output_size(160, 96, 320) == (160, 96)          # never upscaled
    assert output_size(161, 97, 320) == (160, 96)          # even


def test_variable_frame_rate_is_resampled_to_the_average_rate(tmp_path):
    # 2 s at 20 fps, then 2 s at 40 fps: 120 frames over 4 s, average 30 fps
    times = [i / 20 for i in range(40)] + [2 + i / 40 for i in range(80)]
    src = str(tmp_path / "vfr.mp4")
    vfr_indexed_video(src, times)
    with av.open(src) as c:
        fps = Fraction(c.streams.video[0].average_rate)
    r = prepare_video(PrepareJob(src, str(tmp_path / "o.mp4"), 1, 3, short_side=96))
    assert r.ok, r
    got = decoded_indices(r.output)
    n = math.ceil(2 * fps)
    # independent reference: output frame k is the source frame on screen at 1 + k / fps
    expected = [max(i for i, t in enumerate(times) if t <= 1 + k / fps + 0.5 / fps + 1e-9) for k in range(n)]
    assert len(got) == n and got == expected
    assert len(set(got[:30])) == 20 and len(set(got[30:])) == 30  # 20 fps second: repeats; 40 fps: drops


@pytest.mark.parametrize("kind,reason", [("empty", UNREADABLE), ("text", UNREADABLE), ("truncated", UNREADABLE),
                                         ("audio_only", NO_VIDEO), ("no_streams", NO_VIDEO),
                                         ("zero_frames", ZERO_FRAMES)])
def test_broken_sources_fail_with_a_reason_and_no_output(long_videos, tmp_path, kind, reason):
    from data_helpers import make_broken

    src = str(tmp_path / f"{kind}.mp4")
    if kind == "audio_only":
        video_with_audio(src, audio_only=True)
    elif kind == "zero_frames":
        zero_frame_video(src)
    elif kind == "no_streams":
        make_broken(src, "zero_frames", "")  # a container without any stream
    else:
        make_broken(src, kind, long_videos["v25"])
    out = str(tmp_path / "out" / "x.mp4")
    r = prepare_video(PrepareJob(src, out, None, None, short_side=96))
    assert not r.ok and r.reason == reason, r
    assert r.detail and "\n" not in r.detail
    assert not os.path.exists(out) and (not os.path.isdir(tmp_path / "out") or _no_temporaries(tmp_path / "out"))


def test_unwritable_output_is_fatal(long_videos, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = prepare_video(PrepareJob(long_videos["v25"], str(blocker / "sub" / "x.mp4"), 0, 1, short_side=96))
    assert not r.ok and r.reason == OUTPUT and "Not a directory" in r.detail


def test_disk_full_leaves_no_partial_file(long_videos, tmp_path, monkeypatch):
    import errno

    import videoattn.datasets.prepare as prepare

    def full(path, data):  # fault injection: the disk fills up half-way through the write
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(prepare, "_write_file", full)
    out = tmp_path / "o.mp4"
    r = prepare.prepare_video(PrepareJob(long_videos["v25"], str(out), 0, 2, short_side=96))
    assert not r.ok and r.reason == OUTPUT and r.fatal and "No space left" in r.detail
    assert os.listdir(tmp_path) == []


def test_prepare_worker_modules_do_not_import_torch():
    """The prepare worker processes import only videoattn.datasets.prepare (spawn): with the package's
    lazy __init__ (PEP 562) that costs no torch (measured: worker start-up 2.9 s -> 0.14 s on 2 busy
    cores); the package's public names still resolve on first use."""
    import subprocess
    import sys

    import videoattn.data as data
    from videoattn.data import loader

    code = "import sys, videoattn.datasets.prepare, videoattn.datasets.prepare_run; print('torch' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["False"], out.stdout + out.stderr
    assert data.build_loader is loader.build_loader and "build_dataset" in dir(data)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018
