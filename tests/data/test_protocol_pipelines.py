"""Whole protocols against the references' whole pipelines on real videos: PySlowFast's ``Kinetics``
dataset (pyslowfast 1.0: decode, sample, normalise, scale, crop, flip; view order) and mmaction2's
I3D val / test pipelines (DecordInit, SampleFrames, DecordDecode, Resize, ThreeCrop / CenterCrop,
FormatShape: view order). Ours decodes the same file with the same decoder (PyAV for PySlowFast,
decord for mmaction2), so the frames are the same; tolerances as in ``test_protocol_spatial.py``.
"""
import random

import numpy as np
import pytest
import torch

from reference_helpers import coordinate_frames, normalize_slowfast, reference, seeded_globals
from videoattn.data import protocol_spatial as S
from videoattn.data.decoding import open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.datasets.synthetic import make_indexed_video

sf_defaults = reference("slowfast.config.defaults")
sf_kinetics = reference("slowfast.datasets.kinetics")
mm_loading = reference("mmaction.datasets.transforms.loading")
mm_processing = reference("mmaction.datasets.transforms.processing")
mm_formatting = reference("mmaction.datasets.transforms.formatting")

UINT8_TOL = 1.1 / 255 / 0.225   # see test_protocol_spatial.py
FLOAT_TOL = 1e-5
SPEC = dict(num_frames=8, sampling_rate=8, train_jitter_scales=(72, 90), train_crop_size=56, test_crop_size=64)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("protocol_pipelines")
    out = {}
    for name, (frames, fps, w, h) in {"landscape": (100, 25, 160, 96), "portrait": (75, 15, 96, 128),
                                      "short": (30, 30, 128, 96)}.items():
        out[name] = str(folder / f"{name}.webm")        # WebM: PySlowFast decodes it whole (see temporal tests)
        make_indexed_video(out[name], frames, fps, width=w, height=h)
    return out


def _slowfast_dataset(tmp_path, path, mode, spec: ClipSpec):
    (tmp_path / f"{mode}.csv").write_text(f"{path} 0\n")
    cfg = sf_defaults.get_cfg()
    cfg.DATA.PATH_TO_DATA_DIR, cfg.MODEL.ARCH = str(tmp_path), "i3d"
    cfg.DATA.NUM_FRAMES, cfg.DATA.SAMPLING_RATE = spec.num_frames, spec.sampling_rate
    cfg.DATA.TRAIN_JITTER_SCALES, cfg.DATA.TRAIN_CROP_SIZE = list(spec.train_jitter_scales), spec.train_crop_size
    cfg.DATA.TEST_CROP_SIZE = spec.test_crop_size
    cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS = spec.num_ensemble_views, spec.num_spatial_crops
    return sf_kinetics.Kinetics(cfg, mode)


def _decode(path, indices, backend):
    video = open_video(path, backend=backend)
    try:
        return video.get_frames(indices)                 # uint8 (T, H, W, 3)
    finally:
        video.close()


def _meta(path):
    video = open_video(path, backend="pyav")
    n, fps = video.num_frames, video.fps
    video.close()
    return n, fps


def _both_dtypes(frames):
    return {"uint8": (frames.permute(0, 3, 1, 2), UINT8_TOL),
            "float": (normalize_slowfast(frames).permute(1, 0, 2, 3), FLOAT_TOL)}


def _as_slowfast(video):
    if video.dtype == torch.uint8:
        return normalize_slowfast(video.permute(0, 2, 3, 1))
    return video.permute(1, 0, 2, 3)


@pytest.mark.parametrize("name", ["landscape", "portrait", "short"])
def test_pyslowfast_kinetics_test_mode_every_view(videos, tmp_path, name):
    """All 4 x 3 views of PySlowFast's own Kinetics dataset, in its order (view k = temporal k // 3,
    crop k % 3), equal ours: frames, short side, crop boxes, pixels."""
    spec = ClipSpec(**SPEC, num_ensemble_views=4, num_spatial_crops=3)
    dataset, protocol = _slowfast_dataset(tmp_path, videos[name], "test", spec), Protocol("pyslowfast")
    n, fps = _meta(videos[name])
    assert len(dataset) == 12
    for k in range(len(dataset)):
        theirs = dataset[k][0][0]                                    # (3, T, 64, 64) normalised
        temporal, crop_index = protocol.split_view(k, spec)
        frames = _decode(videos[name], protocol.test_indices(n, fps, temporal, spec), "pyav")
        for kind, (video, tol) in _both_dtypes(frames).items():
            ours = protocol.test_crop(protocol.test_resize(video, spec), crop_index, spec)
            assert (_as_slowfast(ours) - theirs).abs().max() <= tol, (k, kind)


@pytest.mark.parametrize("mode", ["train", "val"])
def test_pyslowfast_kinetics_train_and_val_items(videos, tmp_path, mode):
    """Train and val items of PySlowFast's Kinetics (both random clip, jitter, crop, flip), seeded
    alike: its Python ``random`` (clip start) -> our ``random.Random``, its numpy global -> our
    ``RandomState``."""
    spec = ClipSpec(**SPEC)
    dataset, protocol = _slowfast_dataset(tmp_path, videos["landscape"], mode, spec), Protocol("pyslowfast")
    n, fps = _meta(videos["landscape"])
    assert protocol.val == "random"
    starts = set()
    for seed in range(6):
        with seeded_globals(seed):
            theirs = dataset[0][0][0]
        take = protocol.train_indices if mode == "train" else protocol.val_indices
        idx = take(n, fps, spec, random.Random(seed))
        starts.add(int(idx[0]))
        view = protocol.train_view if mode == "train" else protocol.val_view
        for kind, (video, tol) in _both_dtypes(_decode(videos["landscape"], idx, "pyav")).items():
            ours = view(video, spec, np.random.RandomState(seed))
            assert (_as_slowfast(ours) - theirs).abs().max() <= tol, (seed, kind)
    assert len(starts) > 1


# ------------------------------------------------------------------------------------ mmaction2
def _mmaction_views(path, clip_len, interval, num_clips, short, crop_cls, crop_size):
    """mmaction2's pipeline -> uint8 (num_crops * num_clips, 3, T, S, S), in FormatShape's order."""
    results = mm_loading.DecordInit().transform(dict(filename=path, start_index=0, modality="RGB"))
    for t in (mm_loading.SampleFrames(clip_len, interval, num_clips, test_mode=True), mm_loading.DecordDecode(),
              mm_processing.Resize(scale=(-1, short)), crop_cls(crop_size), mm_formatting.FormatShape("NCTHW")):
        results = t.transform(results)
    return torch.from_numpy(results["imgs"])


@pytest.mark.parametrize("name", ["landscape", "portrait", "short"])
@pytest.mark.parametrize("num_crops", [3, 1])
def test_mmaction_i3d_test_pipeline_every_view(videos, name, num_crops):
    """SampleFrames(8, 8, 4, test_mode) + Resize((-1, 72)) + ThreeCrop(72) / CenterCrop(64): all
    views, crop-major as FormatShape orders them, within 1 uint8 level (cv2 vs torch bilinear)."""
    crop = 72 if num_crops == 3 else 64
    spec = ClipSpec(**dict(SPEC, test_crop_size=crop), num_ensemble_views=4, num_spatial_crops=num_crops)
    theirs = _mmaction_views(videos[name], 8, 8, 4, 72, mm_processing.ThreeCrop if num_crops == 3 else
                             mm_processing.CenterCrop, crop)
    protocol = Protocol("mmaction2")
    video = open_video(videos[name], backend="decord")
    n, fps = video.num_frames, video.fps
    assert theirs.shape[0] == 4 * num_crops
    for k in range(theirs.shape[0]):
        temporal, crop_index = protocol.split_view(k, spec)
        frames = video.get_frames(protocol.test_indices(n, fps, temporal, spec)).permute(0, 3, 1, 2)
        ours = protocol.test_crop(protocol.test_resize(frames, spec), crop_index, spec).permute(1, 0, 2, 3)
        assert ours.shape == theirs[k].shape
        assert (ours.int() - theirs[k].int()).abs().max() <= 1, k
    video.close()


def test_mmaction_val_pipeline(videos):
    """mmaction2's I3D val pipeline: one centre clip, Resize((-1, 72)), CenterCrop(56)."""
    spec = ClipSpec(**SPEC)
    protocol = Protocol("mmaction2")
    for name in videos:
        theirs = _mmaction_views(videos[name], 8, 8, 1, 72, mm_processing.CenterCrop, 56)[0]
        n, fps = _meta(videos[name])
        frames = _decode(videos[name], protocol.val_indices(n, fps, spec), "decord").permute(0, 3, 1, 2)
        ours = protocol.val_view(frames, spec).permute(1, 0, 2, 3)
        assert (ours.int() - theirs.int()).abs().max() <= 1, name


@pytest.mark.parametrize("h, w", [(96, 160), (128, 96), (240, 320), (360, 640), (480, 360), (256, 256),
                                  (257, 341), (341, 257), (99, 101), (720, 1280), (1080, 1920)])
def test_mmaction_sizes_and_boxes_equal_reference(h, w):
    for short in (256, 72, 224, 255):
        r = mm_processing.Resize(scale=(-1, short)).transform(dict(img_shape=(h, w)))
        assert S.mmaction_scaled_size(h, w, short) == tuple(r["img_shape"]), short
    nh, nw = S.mmaction_scaled_size(h, w, 256)
    imgs = list(coordinate_frames(nh, nw)[0].permute(1, 2, 0).numpy()[None])   # one (H, W, 2) "frame"
    for size in (224, 256, 255):
        bbox = mm_processing.CenterCrop(size).transform(dict(imgs=imgs))["crop_bbox"]
        assert S.mmaction_center_crop_box(nh, nw, size) == (bbox[1], bbox[0])
    three = mm_processing.ThreeCrop(256).transform(dict(imgs=imgs))
    assert S.mmaction_three_crop_boxes(nh, nw, 256) == [(b[1], b[0]) for b in three["crop_bbox"]]
    assert [(int(c[0, 0, 0]), int(c[0, 0, 1])) for c in three["imgs"]] == [(b[1], b[0]) for b in three["crop_bbox"]]
