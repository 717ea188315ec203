"""The Protocol object: names and val modes, view order, the deterministic centre validation view,
today's whole-video spread kept as ``videoattn``, and one-line errors for bad arguments."""
import numpy as np
import pytest
import torch

from reference_helpers import normalize_slowfast, reference
from data_helpers import small_cfg
from videoattn.data import protocol_spatial as S
from videoattn.data import protocol_temporal as T
from videoattn.data.protocols import PROTOCOLS, ClipSpec, Protocol
from videoattn.data.sampling import clip_indices as today_clip_indices

sf_transform = reference("slowfast.datasets.transform")


def test_names_and_val_modes():
    assert [Protocol(n).val for n in PROTOCOLS] == ["random", "centre", "centre"]
    assert Protocol("pyslowfast", "centre").val == "centre"
    for bad in [dict(name="slowfast"), dict(name="pyslowfast", val="center"), dict(name="mmaction2", val="random")]:
        with pytest.raises(ValueError) as e:
            Protocol(**bad)
        assert "\n" not in str(e.value) and "data." in str(e.value)


def test_view_order_pyslowfast_temporal_major_mmaction2_crop_major():
    spec = ClipSpec(8, 8, num_ensemble_views=4, num_spatial_crops=3)
    assert [Protocol("pyslowfast").split_view(k, spec) for k in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [Protocol("mmaction2").split_view(k, spec) for k in range(5)] == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1)]
    with pytest.raises(ValueError):
        Protocol("pyslowfast").split_view(12, spec)


@pytest.mark.parametrize("frames, fps", [(300, 30), (250, 25), (90, 15), (40, 30), (20, 30)])
def test_videoattn_protocol_is_todays_whole_video_spread(frames, fps):
    spec, protocol = ClipSpec(8, 8, num_ensemble_views=10), Protocol("videoattn")
    for view in range(10):
        np.testing.assert_array_equal(protocol.test_indices(frames, fps, view, spec),
                                      today_clip_indices(frames, fps, 8, 8, 30.0, view, 10))
    np.testing.assert_array_equal(protocol.val_indices(frames, fps, spec),
                                  today_clip_indices(frames, fps, 8, 8, 30.0, 0, 1))
    np.testing.assert_array_equal(protocol.train_indices(frames, fps, spec, np.random.default_rng(3)),
                                  today_clip_indices(frames, fps, 8, 8, 30.0, -1, 1, np.random.default_rng(3)))
    last = protocol.test_indices(frames, fps, 9, spec)[-1]
    assert last == frames - 1 or frames < 64                        # it reaches the end; pyslowfast does not
    assert Protocol("pyslowfast").test_indices(frames, fps, 9, spec)[-1] < frames - 1 or frames < 90


def test_centre_validation_view():
    """``val="centre"``: clip at floor(delta / 2), short side train_jitter_scales[0], centre
    train_crop_size crop (PySlowFast's uniform_crop index 1 after its scale jitter with min = max)."""
    spec, protocol = ClipSpec(8, 8, train_jitter_scales=(72, 90), train_crop_size=56), Protocol("pyslowfast", "centre")
    idx = protocol.val_indices(300, 30, spec)
    assert idx.tolist() == list(range(118, 118 + 64, 9))          # delta = 236
    assert protocol.val_indices(300, 30, spec).tolist() == idx.tolist()
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 96, 160, 3), dtype=np.uint8))
    theirs, _ = sf_transform.random_short_side_scale_jitter(normalize_slowfast(frames), 72, 72)
    theirs, _ = sf_transform.uniform_crop(theirs, 56, 1)
    ours = protocol.val_view(normalize_slowfast(frames).permute(1, 0, 2, 3), spec).permute(1, 0, 2, 3)
    assert (ours - theirs).abs().max() <= 1e-5


def test_clip_spec_from_config_sections(tmp_path):
    cfg = small_cfg(str(tmp_path), str(tmp_path))
    spec = ClipSpec.from_sections(cfg.data, cfg.test)
    assert (spec.num_frames, spec.train_jitter_scales, spec.num_spatial_crops) == (4, (40, 48), 3)
    assert spec.train_crop_size == 32 and spec.num_ensemble_views == 2 and spec.random_flip is True


def test_bad_arguments_are_one_line_value_errors():
    video = torch.zeros(2, 3, 48, 64, dtype=torch.uint8)
    calls = [lambda: T.pyslowfast_clip_indices(0, 30, 8, 8, 30.0, 0, 1),
             lambda: T.pyslowfast_clip_indices(100, 30, 8, 8, 30.0, 10, 10),
             lambda: T.mmaction_clip_indices(100, 8, 8, 3, 3),
             lambda: T.mmaction_clip_indices(100, 8, 8, 0, 1, "clamp"),
             lambda: S.pyslowfast_train_view(video, 40, 40, 56, True, np.random.RandomState(0)),
             lambda: S.pyslowfast_test_crop(video, 0, 4, 32),
             lambda: S.mmaction_three_crop_boxes(48, 64, 40),
             lambda: S.mmaction_crop_boxes(48, 64, 48, 2),
             lambda: S.crop(video, 10, 0, 48)]
    for call in calls:
        with pytest.raises(ValueError) as e:
            call()
        assert "\n" not in str(e.value)


def test_random_sources_of_every_kind_draw_in_range():
    """numpy Generator / RandomState and random.Random all work as ``rng``; crops stay inside."""
    import random
    for rng in (np.random.default_rng(0), np.random.RandomState(0), random.Random(0)):
        for _ in range(20):
            top, left = S.pyslowfast_random_crop_box(60, 90, 56, rng)
            assert 0 <= top < 4 and 0 <= left < 34
            idx = T.pyslowfast_clip_indices(300, 30, 8, 8, 30.0, -1, 1, rng)
            assert 0 <= idx[0] <= 236 and idx[-1] - idx[0] == 63
