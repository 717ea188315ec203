"""The dataset the tools use (VideoClipDataset) against the references' own datasets and pipelines
on the same real videos: items (frame indices and pixels) equal PySlowFast's ``Kinetics`` items
(pyslowfast 1.0: test views in its order, train and val items under the same random draws) and
mmaction2's I3D test / val pipeline outputs (views numbered as its ``FormatShape`` orders them);
feature windows follow PySlowFast's ``temporal_sampling``.

Ours decodes with the default decord reader; PySlowFast decodes the WebM files whole with PyAV
(no duration: its formula path) and mmaction2 with decord: the same frames (the frames carry
their index, and ``frame_indices`` is checked against the references' indices). Pixel
tolerances: see ``test_protocol_spatial.py`` (uint8 resize vs PySlowFast's float resize: 1.1
levels; cv2 vs torch, both uint8: 1 level).
"""
import pytest
import torch

from data_helpers import small_cfg
from reference_helpers import normalize_slowfast, reference, seeded_globals, slowfast_indices
from videoattn.data.annotations import Annotations
from videoattn.data.dataset import VideoClipDataset, draw_seed
from videoattn.data.decoding import open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.datasets.synthetic import make_indexed_video
from videoattn.data.windows import window_layout

sf_defaults = reference("slowfast.config.defaults")
sf_kinetics = reference("slowfast.datasets.kinetics")
sf_decoder = reference("slowfast.datasets.decoder")
sf_transform = reference("slowfast.datasets.transform")
mm_loading = reference("mmaction.datasets.transforms.loading")
mm_processing = reference("mmaction.datasets.transforms.processing")
mm_formatting = reference("mmaction.datasets.transforms.formatting")

UINT8_TOL = 1.1 / 255 / 0.225
OURS = ["data.num_frames=8", "data.sampling_rate=8", "data.train_jitter_scales=[72,90]", "data.train_crop_size=56",
        "data.test_crop_size=64", "data.random_flip=true"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """(path, frames, fps): landscape, portrait, and one shorter than an 8x8 clip (64 frames at 30 fps)."""
    folder = tmp_path_factory.mktemp("protocol_dataset")
    out = []
    for name, (frames, fps, w, h) in {"landscape": (100, 25, 160, 96), "portrait": (75, 15, 96, 128),
                                      "short": (30, 30, 128, 96)}.items():
        path = str(folder / f"{name}.webm")
        make_indexed_video(path, frames, fps, width=w, height=h)
        out.append((path, frames, fps))
    return out


def _ours(tmp_path, videos, split, *opts, views=4, crops=3):
    cfg = small_cfg(str(tmp_path), str(tmp_path), *OURS, f"test.num_ensemble_views={views}",
                    f"test.num_spatial_crops={crops}", *opts)
    return VideoClipDataset(cfg.data, split, Annotations([(p, 0) for p, _, _ in videos], ["a"]), views, crops)


def _theirs(tmp_path, videos, mode, views=4, crops=3):
    """PySlowFast's own Kinetics dataset over the same files, configured as ``OURS``."""
    (tmp_path / f"{mode}.csv").write_text("".join(f"{p} 0\n" for p, _, _ in videos))
    cfg = sf_defaults.get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.ARCH = str(tmp_path), "i3d"
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = 8, 8
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE = [72, 90], 56, 64
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = views, crops
    return sf_kinetics.Kinetics(cfg, mode)


def _clip_size(fps):
    return 8 * 8 * fps / 30                                          # decoder.decode's own expression


def test_pyslowfast_test_items_equal_kinetics_items_in_its_order(videos, tmp_path):
    """Every item of a 4 x 3 view test set: PySlowFast's item ``i`` is ours (same video, same view
    number, frames from its get_start_end_idx / temporal_sampling, pixels after its scale and crop)."""
    ours, theirs = _ours(tmp_path, videos, "test"), _theirs(tmp_path, videos, "test")
    assert len(ours) == len(theirs) == 3 * 12
    for i in range(len(ours)):
        item, their_clip = ours[i], theirs[i][0]
        path, frames, fps = videos[item["video_index"]]
        assert theirs._path_to_videos[i] == path and theirs._spatial_temporal_idx[i] == item["view_index"] == i % 12
        temporal = item["view_index"] // 3                           # PySlowFast: k // NUM_SPATIAL_CROPS
        expected = slowfast_indices(sf_decoder, frames, _clip_size(fps), temporal, 4, 8)
        assert item["frame_indices"].tolist() == expected.tolist(), i
        assert (item["clip"] - their_clip[0]).abs().max() <= UINT8_TOL, i


def test_pyslowfast_single_crop_test_items_follow_its_kinetics_test_path(videos, tmp_path):
    """One spatial crop (PySlowFast HEAD's Kinetics: short side TRAIN_JITTER_SCALES[0], centre
    crop index 1, TEST_CROP_SIZE square; pyslowfast 1.0 predates that rule), composed from its own
    temporal_sampling, random_short_side_scale_jitter and uniform_crop."""
    ours = _ours(tmp_path, videos, "test", views=2, crops=1)
    for i in range(len(ours)):
        item = ours[i]
        path, frames, fps = videos[item["video_index"]]
        expected = slowfast_indices(sf_decoder, frames, _clip_size(fps), item["view_index"], 2, 8)
        assert item["frame_indices"].tolist() == expected.tolist()
        x, _ = sf_transform.random_short_side_scale_jitter(normalize_slowfast(_decode(path, expected)), 72, 72)
        theirs, _ = sf_transform.uniform_crop(x, 64, 1)
        assert (item["clip"] - theirs).abs().max() <= UINT8_TOL, i


def _decode(path, indices):
    video = open_video(path)
    try:
        return video.get_frames(list(indices))
    finally:
        video.close()


@pytest.mark.parametrize("split", ["train", "val"])
def test_pyslowfast_train_and_val_items_equal_kinetics_items_under_the_same_draws(videos, tmp_path, split):
    """A training item draws its seed from torch (:func:`draw_seed`), a validation item uses its
    video index; PySlowFast's item under Python's ``random`` and numpy's global generator seeded
    alike is ours: clip start, scale, crop and flip (both flip outcomes occur)."""
    ours, theirs = _ours(tmp_path, videos, split), _theirs(tmp_path, videos, split)
    unflipped = _ours(tmp_path, videos, split, "data.random_flip=false")
    starts, flipped = {i: set() for i in range(len(videos))}, set()
    for trial in range(4):
        for i, (_, frames, fps) in enumerate(videos):
            torch.manual_seed(trial)
            seed = draw_seed() if split == "train" else i
            torch.manual_seed(trial)
            item = ours[i]
            with seeded_globals(seed):
                their_clip = theirs[i][0][0]
            with seeded_globals(seed):
                expected = slowfast_indices(sf_decoder, frames, _clip_size(fps), -1, 1, 8)
            assert item["frame_indices"].tolist() == expected.tolist(), (trial, i)
            assert (item["clip"] - their_clip).abs().max() <= UINT8_TOL, (trial, i)
            starts[i].add(int(expected[0]))
            torch.manual_seed(trial)
            flipped.add(bool((unflipped[i]["clip"] - their_clip).abs().max() > UINT8_TOL))
    assert flipped == {True, False}
    if split == "train":
        assert len(starts[0]) > 1 and starts[2] == {0}              # the short video has one possible start
    else:
        assert all(len(s) == 1 for s in starts.values())           # val: one fixed draw per video


def test_centre_validation_items(videos, tmp_path):
    """data.val_mode=centre: the clip at floor(delta / 2) by PySlowFast's temporal_sampling, short
    side TRAIN_JITTER_SCALES[0], its centre uniform_crop of TRAIN_CROP_SIZE; the same every pass."""
    ours = _ours(tmp_path, videos, "val", "data.val_mode=centre")
    for i, (path, frames, fps) in enumerate(videos):
        start = int(max(frames - _clip_size(fps), 0) // 2)
        expected = sf_decoder.temporal_sampling(torch.arange(frames), start, start + _clip_size(fps) - 1, 8).numpy()
        item = ours[i]
        assert item["frame_indices"].tolist() == expected.tolist()
        x, _ = sf_transform.random_short_side_scale_jitter(normalize_slowfast(_decode(path, expected)), 72, 72)
        theirs, _ = sf_transform.uniform_crop(x, 56, 1)
        assert (item["clip"] - theirs).abs().max() <= UINT8_TOL
        assert torch.equal(ours[i]["clip"], item["clip"])


# ------------------------------------------------------------------------------------ mmaction2
def _mmaction(path, num_clips, short, crop_cls, crop_size):
    """mmaction2's I3D pipeline on ``path`` -> (frame_inds (num_clips, 8), uint8 views (N, 3, 8, S, S)
    in FormatShape's order)."""
    results = mm_loading.DecordInit().transform(dict(filename=path, start_index=0, modality="RGB"))
    results = mm_loading.SampleFrames(8, 8, num_clips, test_mode=True).transform(results)
    inds = results["frame_inds"].reshape(num_clips, 8)
    for t in (mm_loading.DecordDecode(), mm_processing.Resize(scale=(-1, short)), crop_cls(crop_size),
              mm_formatting.FormatShape("NCTHW")):
        results = t.transform(results)
    return inds, torch.from_numpy(results["imgs"])


@pytest.mark.parametrize("crops", [3, 1])
def test_mmaction2_test_items_equal_its_pipeline_views(videos, tmp_path, crops):
    """data.protocol=mmaction2: SampleFrames(8, 8, 4, test_mode) + Resize((-1, 72)) + ThreeCrop(72)
    / CenterCrop(64); item ``view_index`` k is FormatShape's view k (crop-major), within 1 level."""
    size = 72 if crops == 3 else 64
    ours = _ours(tmp_path, videos, "test", "data.protocol=mmaction2", f"data.test_crop_size={size}",
                 "data.normalize_on_device=true", crops=crops)
    crop_cls = mm_processing.ThreeCrop if crops == 3 else mm_processing.CenterCrop
    views = {v: _mmaction(p, 4, 72, crop_cls, size) for v, (p, _, _) in enumerate(videos)}
    seen = set()
    for i in range(len(ours)):
        item = ours[i]
        inds, imgs = views[item["video_index"]]
        k = item["view_index"]
        assert item["frame_indices"].tolist() == inds[k % 4].tolist(), i   # FormatShape: k = crop * 4 + clip
        assert item["clip"].dtype == torch.uint8 and item["clip"].shape == imgs[k].shape
        assert (item["clip"].int() - imgs[k].int()).abs().max() <= 1, i
        seen.add((item["video_index"], k))
    assert len(seen) == len(ours) == 3 * 4 * crops


def test_mmaction2_validation_items_equal_its_val_pipeline(videos, tmp_path):
    ours = _ours(tmp_path, videos, "val", "data.protocol=mmaction2", "data.normalize_on_device=true")
    assert ours.protocol.val == "centre"
    for i, (path, _, _) in enumerate(videos):
        inds, imgs = _mmaction(path, 1, 72, mm_processing.CenterCrop, 56)
        item = ours[i]
        assert item["frame_indices"].tolist() == inds[0].tolist()
        assert (item["clip"].int() - imgs[0].int()).abs().max() <= 1


# ---------------------------------------------------------------------------------- feature windows
@pytest.mark.parametrize("frames, fps", [(300, 30), (250, 25), (90, 15), (240, 24), (40, 30)])
def test_pyslowfast_feature_windows_are_its_clips(frames, fps):
    """A window starting at frame s is PySlowFast's temporal_sampling over [s, s + clip_size - 1];
    windows start every stride and only whole ones are kept (a short video: one, clamped)."""
    spec = ClipSpec(8, 8)
    win = window_layout(Protocol("pyslowfast"), spec, frames, fps, stride_s=0.5)
    size = _clip_size(fps)
    for start_s, idx in zip(win.starts, win.indices):
        s = round(start_s * fps)
        theirs = sf_decoder.temporal_sampling(torch.arange(frames), s, s + size - 1, 8).numpy()
        assert idx == theirs.tolist(), (start_s, idx)
    inside = [k for k in range(frames) if int(k * 0.5 * fps) + size - 1 < frames]     # last sample in the video
    if inside:
        assert len(win.starts) == len(inside) and win.repeated == [0] * len(inside)
    else:
        assert len(win.starts) == 1 and win.repeated[0] > 0 and max(win.indices[0]) == frames - 1


@pytest.mark.parametrize("frames", [40, 57, 20, 7])
def test_mmaction2_feature_window_of_a_short_video_is_its_sample_frames_clip(frames):
    """A video no longer than one mmaction2 clip (57 frames for 8 x 8) has one window, at its
    start: SampleFrames(8, 8, 1, test_mode)'s clip, wrapped around past the end as it does."""
    win = window_layout(Protocol("mmaction2"), ClipSpec(8, 8), frames, 30.0)
    theirs = mm_loading.SampleFrames(8, 8, 1, test_mode=True).transform(dict(total_frames=frames, start_index=0))
    assert win.indices == [theirs["frame_inds"].tolist()]
    assert win.repeated == [int(sum(j * 8 >= frames for j in range(8)))]
    assert win.window_s == pytest.approx(64 / 30.0)                 # frame_interval counts the video's frames
