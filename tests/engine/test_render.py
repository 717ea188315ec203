"""Rendering predictions: the labelled video (PyAV in, H.264 out) decodes with decord with the
input's frame count and fps and differs from it only in the label box; the timeline strip PNG."""

import os

import av  # noqa: F401  (before decord: their bundled FFmpeg libraries clash otherwise)
import decord
import numpy as np
import pytest
from PIL import Image

from videoattn.apps.render import label_colours, render_timeline, render_video
from videoattn.apps.timeline import segments, window_topk
from videoattn.datasets.synthetic import encode_video
from videoattn.datasets.synthetic import render_video as synthetic_frames

NAMES = ["moving right", "moving left", "growing", "shrinking", "fading in", "fading out"]


def _windows(tops, length=1.0):
    """Back-to-back windows of ``length`` s; window i has top-1 ``tops[i]``."""
    scores = np.full((len(tops), len(NAMES)), 0.02)
    for i, t in enumerate(tops):
        scores[i, t] = 0.9 - 0.1 * i
        scores[i, (t + 2) % len(NAMES)] = 0.05 + 0.01 * i
    return window_topk(
        scores, [i * length for i in range(len(tops))], [(i + 1) * length for i in range(len(tops))], NAMES, k=5
    )


def _decode(path):
    vr = decord.VideoReader(path, ctx=decord.cpu(0))
    return vr.get_batch(list(range(len(vr)))).asnumpy().astype(np.int16), vr.get_avg_fps()


@pytest.mark.parametrize("ext,fps,size", [("mp4", 25, (256, 192)), ("avi", 15, (320, 176))])
def test_rendered_video_same_frames_and_fps_text_only_in_the_box(tmp_path, ext, fps, size):
    src = str(tmp_path / f"src.{ext}")
    encode_video(src, synthetic_frames(2, 2 * fps + 7, size[0], size[1], np.random.default_rng(1)), fps)
    wins = _windows([0, 3, 3])  # windows [0,1) [1,2) [2,3): the last holds the tail frames
    out = str(tmp_path / "out" / "src.mp4")
    info = render_video(src, wins, out)
    source, src_fps = _decode(src)
    rendered, out_fps = _decode(out)
    assert rendered.shape == source.shape and info["frames"] == len(source) == 2 * fps + 7
    assert abs(out_fps - src_fps) < 1e-3 and info["fps"] == pytest.approx(src_fps)
    with av.open(out) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"
    x0, y0, x1, y1 = info["box"]
    assert x0 == y0 == 0 and 60 < x1 < size[0] and 30 < y1 < size[1] // 2
    diff = np.abs(rendered - source).mean(axis=3)  # (T, H, W)
    outside = np.ones(diff.shape[1:], bool)
    outside[: y1 + 16, : x1 + 16] = False  # the box and a macroblock of codec spill around it
    assert diff[:, outside].mean() < 3.0  # codec noise only
    assert diff[:, y0:y1, x0:x1].mean() > 20  # darkened box
    text = (rendered[:, y0:y1, x0:x1] > 160).all(axis=3)  # white text: the darkened box is <= 73
    assert (text.sum(axis=(1, 2)) > 40).all()
    # the text follows the window holding each frame (frame i at i / fps): same text within a
    # window, other text in another one
    expected = [min(i // fps, len(wins) - 1) for i in range(len(source))]
    first = {w: text[expected.index(w)] for w in set(expected)}
    for i, w in enumerate(expected):
        assert (text[i] != first[w]).mean() < 0.02, i
    assert (first[0] != first[1]).mean() > 0.02 and (first[1] != first[2]).mean() > 0.002  # 2nd: scores only
    assert sorted(os.listdir(tmp_path / "out")) == ["src.mp4"]  # no temporary left


def test_odd_frame_size_is_padded_to_even(tmp_path):
    src = str(tmp_path / "odd.mkv")
    frames = synthetic_frames(0, 20, 95, 71, np.random.default_rng(2))
    with av.open(src, "w", format="matroska") as c:  # lossless, odd sizes allowed
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = 95, 71, "yuv444p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    out = str(tmp_path / "odd.mp4")
    info = render_video(src, _windows([1]), out)
    rendered, out_fps = _decode(out)
    assert rendered.shape == (20, 72, 96, 3) and (info["width"], info["height"]) == (96, 72)
    assert info["box"][3] <= 36  # a small frame gets fewer lines: the box stays in the top half
    assert abs(out_fps - 10) < 1e-3
    # the padding repeats the last column / row
    assert np.abs(rendered[:, 60:, 95] - rendered[:, 60:, 94]).mean() < 4


def test_broken_video_is_a_one_line_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    out = tmp_path / "out" / "bad.mp4"
    with pytest.raises(ValueError, match=r"cannot render .*bad.mp4: ") as e:
        render_video(str(bad), _windows([0]), str(out))
    assert "\n" not in str(e.value)
    assert not out.exists() and (not out.parent.exists() or os.listdir(out.parent) == [])


def test_timeline_strip_png(tmp_path):
    wins = _windows([0, 0, 2, 2, 2, 5, 0], length=0.5)
    path = str(tmp_path / "strip.png")
    size = render_timeline(wins, path, duration_s=3.6, title="clip", width_in=12, height_in=2, dpi=100)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert size == (1200, 200) and img.shape == (200, 1200, 3)  # the aspect asked for, exactly
    # every segment's colour is drawn, in proportion to its length
    colours = label_colours(wins)
    segs = segments(wins)
    assert [s.label for s in segs] == ["moving right", "growing", "fading out", "moving right"]
    share = {}
    for idx, rgba in colours.items():
        rgb = np.round(np.array(rgba[:3]) * 255)
        share[idx] = (np.abs(img - rgb).sum(axis=2) < 6).sum()
    assert all(v > 500 for v in share.values())
    assert share[2] > share[5] * 2  # growing: 1.5 s, fading out: 0.5 s
