"""fps-aware temporal sampling: sampling_rate counts frames at target_fps; short videos repeat
their last frame; checked on the math and on real decoded videos whose frames carry their index."""
import numpy as np
import pytest
import torch

from data_helpers import frame_indices, small_cfg
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.annotations import Annotations
from videoattn.data.sampling import clip_indices
from videoattn.data.synthetic import make_indexed_video


@pytest.mark.parametrize("fps", [15, 25, 30, 24000 / 1001])
@pytest.mark.parametrize("clip_index, num_clips", [(-1, 1), (0, 1), (0, 5), (4, 5)])
def test_sample_times_follow_target_fps(fps, clip_index, num_clips):
    """Brute force: sample j must be the frame showing time t0 + j * rate / target_fps."""
    n = int(10 * fps)
    idx = clip_indices(n, fps, 8, 8, 30.0, clip_index, num_clips, np.random.default_rng(0))
    times = idx / fps
    expected = times[0] + np.arange(8) * 8 / 30.0
    assert np.all(np.abs(times - expected) < 1.0 / fps + 1e-9)       # within one source frame
    assert 0 <= idx[0] and idx[-1] < n and np.all(np.diff(idx) > 0)


def test_uniform_views_cover_the_whole_video():
    starts = [clip_indices(300, 30, 8, 8, 30.0, k, 10)[0] for k in range(10)]
    last = clip_indices(300, 30, 8, 8, 30.0, 9, 10)
    assert starts[0] == 0 and last[-1] == 299 and np.all(np.diff(starts) > 0)
    centre = clip_indices(300, 30, 8, 8, 30.0, 0, 1)
    assert abs((centre[0] + centre[-1]) / 2 - 149.5) <= 1


def test_short_video_repeats_last_frame():
    idx = clip_indices(20, 30, 8, 8, 30.0, -1, 1, np.random.default_rng(0))
    assert list(idx) == [0, 8, 16, 19, 19, 19, 19, 19]


@pytest.fixture(scope="module")
def fps_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fps")
    paths = {}
    for fps in (15, 25, 30):
        paths[fps] = str(folder / f"v{fps}.mp4")
        make_indexed_video(paths[fps], 3 * fps, fps)          # 3 s each
    paths["short"] = str(folder / "short.webm")
    make_indexed_video(paths["short"], 12, 30)
    return paths


def test_clip_duration_is_the_same_at_15_25_30_fps(fps_videos, tmp_path):
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.num_frames=8", "data.sampling_rate=8")
    ds = VideoClipDataset(cfg.data, "val", Annotations([], ["a"]))
    spans = {}
    for fps in (15, 25, 30):
        got = frame_indices(ds.sample_clip(fps_videos[fps], 0, 1)[0])   # indices read from the pixels
        spans[fps] = (got[-1] - got[0]) / fps
        assert np.all(np.diff(got) > 0)
    expected = 7 * 8 / 30.0
    for fps, span in spans.items():
        assert abs(span - expected) <= 1.0 / fps + 1e-9, (fps, span)


def test_short_real_video_repeats_last_decoded_frame(fps_videos, tmp_path):
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.num_frames=6", "data.sampling_rate=4")
    ds = VideoClipDataset(cfg.data, "train", Annotations([], ["a"]))
    got = frame_indices(ds.sample_clip(fps_videos["short"], -1, 1, np.random.default_rng(1))[0])
    assert got == [0, 4, 8, 11, 11, 11]


def test_items_report_the_frames_they_show(fps_videos, tmp_path):
    """``frame_indices`` of an item is what its pixels show (train: random start; test: each view)."""
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.num_frames=8", "data.sampling_rate=4",
                    "test.num_ensemble_views=3", "test.num_spatial_crops=1")
    for split in ("train", "test"):
        ds = VideoClipDataset(cfg.data, split, Annotations([(fps_videos[25], 0), (fps_videos["short"], 0)], ["a"]),
                              num_clips=3, num_crops=1)
        for k in range(len(ds)):
            item = ds[k]
            frames, idx = ds.sample_clip(ds.videos[item["video_index"]][0], -1, 1, np.random.default_rng(k))
            assert frame_indices(frames) == idx.tolist()          # sample_clip: indices == pixels
            assert item["frame_indices"].dtype == torch.int64 and item["frame_indices"].shape == (8,)
            if split == "test":                                     # the view's own clip, from the pixels
                view = ds.sample_clip(ds.videos[item["video_index"]][0], item["view_index"], 3)
                assert item["frame_indices"].tolist() == frame_indices(view[0])


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
        idx = clip_indices(150, 30, 8, 4, 30.0, v, 5)
        assert it["valid"] == (idx[-1] < real)
        if it["valid"]:
            frames, got = ds.sample_clip(cut, v, 5)
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
