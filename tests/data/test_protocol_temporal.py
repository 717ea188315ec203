"""Temporal protocols against the references' own code: PySlowFast's ``get_start_end_idx`` /
``temporal_sampling`` / ``decode`` (pyslowfast 1.0) and mmaction2's ``SampleFrames`` /
``DecordInit`` / ``DecordDecode`` (1.2.0), on index arithmetic and on real decoded videos whose
frames carry their index.

Random training clips: PySlowFast draws the start with Python's ``random.uniform``; ours is given a
``random.Random`` seeded like Python's global ``random``, so both see the same draw.
"""
import random

import av
import numpy as np
import pytest

from reference_helpers import reference, seeded_globals, slowfast_indices
from data_helpers import frame_indices
from videoattn.data.decoding import open_video
from videoattn.data.protocol_temporal import (mmaction_clip_indices, pyslowfast_clip_indices,
                                              pyslowfast_clip_size, videoattn_clip_indices)
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.datasets.synthetic import make_indexed_video

decoder = reference("slowfast.datasets.decoder")
mm_loading = reference("mmaction.datasets.transforms.loading")

# (frames, fps): the issue's videos, 24 and 29.97 fps, and videos shorter than one 8x8 clip
VIDEOS = [(300, 30), (250, 25), (90, 15), (40, 30), (240, 24), (299, 30000 / 1001), (20, 30), (7, 15), (1, 25)]
ISSUE_VIDEOS = [(300, 30), (250, 25), (90, 15), (40, 30)]


def _their_clip_size(num_frames, sampling_rate, fps, target_fps):
    return num_frames * sampling_rate * fps / target_fps          # decoder.decode's own expression


@pytest.mark.parametrize("frames, fps", VIDEOS)
@pytest.mark.parametrize("num_frames, sampling_rate", [(8, 8), (32, 2), (4, 16)])
def test_pyslowfast_test_views_equal_reference(frames, fps, num_frames, sampling_rate):
    size = _their_clip_size(num_frames, sampling_rate, fps, 30)
    # ours is HEAD's expression (sampling_rate * num_frames / target_fps * fps): last bit may differ at 29.97 fps
    assert pyslowfast_clip_size(num_frames, sampling_rate, fps, 30) == pytest.approx(size, rel=1e-14)
    for num_views in (1, 3, 10):
        for view in range(num_views):
            theirs = slowfast_indices(decoder, frames, size, view, num_views, num_frames)
            ours = pyslowfast_clip_indices(frames, fps, num_frames, sampling_rate, 30.0, view, num_views)
            np.testing.assert_array_equal(ours, theirs, err_msg=f"view {view} of {num_views}")


@pytest.mark.parametrize("frames, fps", VIDEOS)
def test_pyslowfast_train_clips_equal_reference_given_the_same_draw(frames, fps):
    size = _their_clip_size(8, 8, fps, 30)
    starts = set()
    for seed in range(40):
        with seeded_globals(seed):
            theirs = slowfast_indices(decoder, frames, size, -1, 1, 8)
        ours = pyslowfast_clip_indices(frames, fps, 8, 8, 30.0, -1, 1, random.Random(seed))
        np.testing.assert_array_equal(ours, theirs, err_msg=f"seed {seed}")
        starts.add(int(ours[0]))
    assert len(starts) > 1 or frames <= size + 1               # the draw really moves the clip


@pytest.mark.parametrize("frames, fps", ISSUE_VIDEOS)
def test_issue_videos_equal_pyslowfast_on_every_view_and_videoattn_differs(frames, fps):
    """The issue's mismatch turned to equal: data.protocol=pyslowfast takes PySlowFast's clips on all
    10 views and the single view; the project's former sampling, kept as data.protocol=videoattn
    (8-frame steps, views over delta * i / (N - 1), centre clip for one view), matches none."""
    size = _their_clip_size(8, 8, fps, 30)
    for num_views in (1, 10):
        spec = ClipSpec(8, 8, num_ensemble_views=num_views)
        for view in range(num_views):
            theirs = slowfast_indices(decoder, frames, size, view, num_views, 8)
            assert np.array_equal(Protocol("pyslowfast").test_indices(frames, fps, view, spec), theirs)
            assert not np.array_equal(Protocol("videoattn").test_indices(frames, fps, view, spec), theirs)
            assert np.array_equal(Protocol("videoattn").test_indices(frames, fps, view, spec),
                                  videoattn_clip_indices(frames, fps, 8, 8, 30.0, view, num_views))


def test_pyslowfast_steps_9_frames_for_8x8_at_30fps():
    idx = pyslowfast_clip_indices(300, 30, 8, 8, 30.0, 0, 10)
    assert idx.tolist() == list(range(0, 64, 9))                     # linspace(0, 63, 8)
    assert pyslowfast_clip_indices(300, 30, 8, 8, 30.0, 9, 10)[0] == 212   # 236 * 9 / 10: the tail is never a start


@pytest.fixture(scope="module")
def indexed_videos(tmp_path_factory):
    """Real videos whose frame i shows i. WebM: its stream has no duration, so PySlowFast decodes the
    whole video and samples with the formula; MP4 has one, and PySlowFast seeks."""
    folder = tmp_path_factory.mktemp("protocol_temporal")
    paths = {}
    for frames, fps in [(300, 30), (250, 25), (90, 15), (40, 30), (240, 24), (20, 30)]:
        for ext in ("webm", "mp4"):
            paths[(frames, fps, ext)] = str(folder / f"v{frames}_{fps}.{ext}")
            make_indexed_video(paths[(frames, fps, ext)], frames, fps)
    return paths


def _their_decode(path, view, num_views, num_frames=8, sampling_rate=8):
    with av.open(path) as container:
        frames = decoder.decode(container, sampling_rate, num_frames, view, num_views, target_fps=30)
    return frame_indices(frames.numpy())


def _ours(path, view, num_views, rng=None):
    video = open_video(path)
    try:
        idx = pyslowfast_clip_indices(video.num_frames, video.fps, 8, 8, 30.0, view, num_views, rng)
        return frame_indices(video.get_frames(idx).numpy())
    finally:
        video.close()


@pytest.mark.parametrize("frames, fps", [(300, 30), (250, 25), (90, 15), (40, 30), (240, 24), (20, 30)])
def test_pyslowfast_decode_shows_the_same_frames(indexed_videos, frames, fps):
    """PySlowFast's own ``decode`` on a real video (whole-video path) shows the frames ours shows,
    for every test view, one view, and seeded training clips."""
    path = indexed_videos[(frames, fps, "webm")]
    for num_views in (1, 10):
        for view in range(num_views):
            assert _ours(path, view, num_views) == _their_decode(path, view, num_views), (view, num_views)
    for seed in range(5):
        with seeded_globals(seed):
            theirs = _their_decode(path, -1, 1)
        assert _ours(path, -1, 1, random.Random(seed)) == theirs, seed


@pytest.mark.parametrize("frames, fps", [(300, 30), (250, 25), (90, 15), (240, 24)])
def test_pyslowfast_seeking_path_is_at_most_one_frame_later(indexed_videos, frames, fps):
    """Where PySlowFast seeks (MP4), it starts at the first frame whose pts reaches
    ``int(start * timebase)``: the formula's clip or, for a fractional start, one frame later."""
    path = indexed_videos[(frames, fps, "mp4")]
    shifts = set()
    for view in range(10):
        ours, theirs = np.array(_ours(path, view, 10)), np.array(_their_decode(path, view, 10))
        shifts.update((theirs - ours).tolist())
    assert shifts <= {0, 1}, shifts


# ------------------------------------------------------------------------------------ mmaction2
def _sample_frames(frames, clip_len, interval, num_clips, **kw):
    t = mm_loading.SampleFrames(clip_len, interval, num_clips, test_mode=True, **kw)
    return t.transform(dict(total_frames=frames, start_index=0))["frame_inds"].reshape(num_clips, clip_len)


@pytest.mark.parametrize("frames", [300, 250, 90, 64, 63, 62, 40, 20, 7, 1])
@pytest.mark.parametrize("clip_len, interval", [(32, 2), (8, 8), (16, 4), (1, 1)])
@pytest.mark.parametrize("out_of_bound", ["loop", "repeat_last"])
def test_mmaction_sample_frames_equal_reference(frames, clip_len, interval, out_of_bound):
    for num_clips in (1, 3, 10):
        theirs = _sample_frames(frames, clip_len, interval, num_clips, out_of_bound_opt=out_of_bound)
        for view in range(num_clips):
            ours = mmaction_clip_indices(frames, clip_len, interval, view, num_clips, out_of_bound)
            np.testing.assert_array_equal(ours, theirs[view], err_msg=f"view {view} of {num_clips}")


def test_mmaction_decord_pipeline_shows_the_same_frames(indexed_videos):
    """DecordInit -> SampleFrames(32, 2, 10, test_mode) -> DecordDecode (mmaction2's I3D test
    pipeline) on real videos, 10 clips, against ours decoded by the project's reader."""
    for key in [(300, 30, "mp4"), (90, 15, "mp4"), (20, 30, "mp4")]:
        results = mm_loading.DecordInit().transform(dict(filename=indexed_videos[key], start_index=0))
        results = mm_loading.SampleFrames(32, 2, 10, test_mode=True).transform(results)
        imgs = np.stack(mm_loading.DecordDecode().transform(results)["imgs"])      # (10 * 32, H, W, 3)
        imgs = imgs.reshape(10, 32, *imgs.shape[1:])
        video = open_video(indexed_videos[key])
        try:
            for view in range(10):
                idx = mmaction_clip_indices(video.num_frames, 32, 2, view, 10)
                assert frame_indices(video.get_frames(idx).numpy()) == frame_indices(imgs[view]), (key, view)
        finally:
            video.close()
