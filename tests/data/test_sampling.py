"""Temporal sampling on real decoded videos whose frames carry their index, per protocol, and the
project's own convention (``data.protocol=videoattn``: samples ``sampling_rate / target_fps``
seconds apart, test views spread over the whole video, one view = the centre clip). PySlowFast's
and mmaction2's against their own code: test_protocol_*.py."""
import random

import numpy as np
import pytest
import torch

from data_helpers import frame_indices, small_cfg
from videoattn.data.annotations import Annotations
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.protocol_temporal import videoattn_clip_indices
from videoattn.datasets.synthetic import make_indexed_video


@pytest.mark.parametrize("fps", [15, 25, 30, 24000 / 1001])
@pytest.mark.parametrize("view, num_views", [(-1, 1), (0, 1), (0, 5), (4, 5)])
def test_videoattn_sample_times_follow_target_fps(fps, view, num_views):
    """Brute force: sample j must be the frame showing time t0 + j * rate / target_fps."""
    n = int(10 * fps)
    idx = videoattn_clip_indices(n, fps, 8, 8, 30.0, view, num_views, np.random.default_rng(0))
    times = idx / fps
    expected = times[0] + np.arange(8) * 8 / 30.0
    assert np.all(np.abs(times - expected) < 1.0 / fps + 1e-9)       # within one source frame
    assert 0 <= idx[0] and idx[-1] < n and np.all(np.diff(idx) > 0)


def test_videoattn_views_cover_the_whole_video():
    starts = [videoattn_clip_indices(300, 30, 8, 8, 30.0, k, 10)[0] for k in range(10)]
    last = videoattn_clip_indices(300, 30, 8, 8, 30.0, 9, 10)
    assert starts[0] == 0 and last[-1] == 299 and np.all(np.diff(starts) > 0)
    centre = videoattn_clip_indices(300, 30, 8, 8, 30.0, 0, 1)
    assert abs((centre[0] + centre[-1]) / 2 - 149.5) <= 1
    with pytest.raises(ValueError, match="view 10 is not in"):
        videoattn_clip_indices(300, 30, 8, 8, 30.0, 10, 10)


def test_videoattn_short_video_repeats_last_frame():
    idx = videoattn_clip_indices(20, 30, 8, 8, 30.0, -1, 1, random.Random(0))
    assert list(idx) == [0, 8, 16, 19, 19, 19, 19, 19]


@pytest.fixture(scope="module")
def fps_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fps")
    paths = {}
    for fps in (15, 25, 30):
        paths[fps] = str(folder / f"v{fps}.mp4")
        make_indexed_video(paths[fps], 4 * fps, fps)          # 4 s each (an mmaction2 8x8 clip: 57 frames)
    paths["short"] = str(folder / "short.webm")
    make_indexed_video(paths["short"], 12, 30)
    return paths


def _dataset(tmp_path, protocol, split, *opts, videos=(), views=1):
    cfg = small_cfg(str(tmp_path), str(tmp_path), f"data.protocol={protocol}", *opts)
    return VideoClipDataset(cfg.data, split, Annotations([(v, 0) for v in videos], ["a"]), views, 1)


@pytest.mark.parametrize("protocol, first_to_last", [
    ("videoattn", lambda fps: 7 * 8 / 30.0),             # 8 samples 8 frames at 30 fps apart
    ("pyslowfast", lambda fps: 8 * 8 / 30.0 - 1 / fps),  # linspace over 8 x 8 frames at 30 fps
    ("mmaction2", lambda fps: 7 * 8 / fps),              # 8 samples 8 of the video's frames apart
])
def test_clip_duration_at_15_25_30_fps(fps_videos, tmp_path, protocol, first_to_last):
    """The time from a test clip's first to its last frame, read from the decoded pixels: the same
    at every frame rate for PySlowFast and videoattn (sampling_rate counts frames at target_fps),
    in the video's own frames for mmaction2."""
    ds = _dataset(tmp_path, protocol, "test", "data.num_frames=8", "data.sampling_rate=8")
    for fps in (15, 25, 30):
        got = frame_indices(ds.read_clip(fps_videos[fps])[0])   # indices read from the pixels
        assert np.all(np.diff(got) > 0)
        assert abs((got[-1] - got[0]) / fps - first_to_last(fps)) <= 1.0 / fps + 1e-9, (fps, got)


@pytest.mark.parametrize("protocol, split, expected", [
    ("videoattn", "train", [0, 4, 8, 11, 11, 11]),        # 4 frames apart, then the last frame
    ("pyslowfast", "train", [0, 4, 9, 11, 11, 11]),       # linspace(0, 23, 6), clamped
    ("mmaction2", "test", [0, 4, 8, 0, 4, 8]),            # SampleFrames' default: loop
])
def test_short_real_video_past_its_end(fps_videos, tmp_path, protocol, split, expected):
    ds = _dataset(tmp_path, protocol, split, "data.num_frames=6", "data.sampling_rate=4")
    frames, idx = ds.read_clip(fps_videos["short"], seed=1)
    assert frame_indices(frames) == idx.tolist() == expected


@pytest.mark.parametrize("protocol", ["pyslowfast", "mmaction2", "videoattn"])
def test_items_report_the_frames_they_show(fps_videos, tmp_path, protocol):
    """``frame_indices`` of an item is what its pixels show (train: random start; test: each view)."""
    for split in ("train", "test"):
        ds = _dataset(tmp_path, protocol, split, "data.num_frames=8", "data.sampling_rate=4",
                      "test.num_ensemble_views=3", "test.num_spatial_crops=1",
                      videos=(fps_videos[25], fps_videos["short"]), views=3)
        for k in range(len(ds)):
            item = ds[k]
            path = ds.videos[item["video_index"]][0]
            assert item["frame_indices"].dtype == torch.int64 and item["frame_indices"].shape == (8,)
            if split == "test":                                     # the view's own clip, from the pixels
                frames, idx = ds.read_clip(path, item["view_index"])
            else:
                frames, idx = ds.read_clip(path, seed=k)
            assert frame_indices(frames) == idx.tolist()            # read_clip: indices == pixels
            assert split == "train" or item["frame_indices"].tolist() == idx.tolist()


def test_file_cut_short_train_skips_test_view_invalid_never_repeats(tmp_path):
    """A 150-frame faststart mp4 cut at half its bytes: a train clip past its real end counts as
    broken (another video is tried, the reason recorded); a test view past it is invalid (not
    substituted); every clip that is used shows real frames only (pixels == indices < real end)."""
    from videokit import cut_file, decodable_indexed_frames

    full, cut, good = str(tmp_path / "full.mp4"), str(tmp_path / "cut.mp4"), str(tmp_path / "good.mp4")
    make_indexed_video(full, 150, 30, container_options={"movflags": "+faststart"})
    cut_file(full, cut, 0.5)
    make_indexed_video(good, 90, 30)
    real = decodable_indexed_frames(cut)
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.num_frames=8", "data.sampling_rate=4", "data.num_retries=5",
                    "test.num_ensemble_views=5", "test.num_spatial_crops=1")
    ds = VideoClipDataset(cfg.data, "test", Annotations([(cut, 0)], ["a"]), num_clips=5, num_crops=1)
    items = [ds[v] for v in range(5)]
    valid = [it["valid"] for it in items]
    assert valid[0] and not valid[-1]                   # views spread over the declared 5 s
    for v, it in enumerate(items):
        idx = ds.protocol.test_indices(150, 30, v, ds.spec)
        assert it["valid"] == (idx[-1] < real)
        if it["valid"]:
            frames, got = ds.read_clip(cut, v)
            assert frame_indices(frames) == got.tolist() == idx.tolist()
        else:
            assert f"only {real} of 150 declared frames decode" in it["error"]
    torch.manual_seed(0)
    ds = VideoClipDataset(cfg.data, "train", Annotations([(cut, 0), (good, 0)], ["a"]))
    skipped = []
    for _ in range(20):
        item = ds[0]                                    # the cut video first, then random others
        skipped += item["skipped"]
        if item["video_index"] == 0:
            assert int(item["frame_indices"].max()) < real
    assert skipped and all(p == cut and "truncated" in r for p, r in skipped)
