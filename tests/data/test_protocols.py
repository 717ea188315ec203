"""The Protocol object: names and val modes, view order, the deterministic centre validation view,
geometry checks, and one-line errors for bad arguments (the ``videoattn`` convention:
test_sampling.py)."""
import numpy as np
import pytest
import torch

from reference_helpers import normalize_slowfast, reference
from data_helpers import small_cfg
from videoattn.data import build_dataset
from videoattn.data import protocol_spatial as S
from videoattn.data import protocol_temporal as T
from videoattn.data.protocols import PROTOCOLS, ClipSpec, Protocol

sf_transform = reference("slowfast.datasets.transform")


def test_names_and_val_modes(tmp_path):
    assert [Protocol(n).val for n in PROTOCOLS] == ["random", "centre", "centre"]
    assert Protocol("pyslowfast", "centre").val == "centre" and Protocol("mmaction2", "random").val == "random"
    for bad in [dict(name="slowfast"), dict(name="pyslowfast", val="center")]:
        with pytest.raises(ValueError) as e:
            Protocol(**bad)
        assert "\n" not in str(e.value) and "data." in str(e.value)
    cfg = small_cfg(str(tmp_path), str(tmp_path))
    assert Protocol.from_data(cfg.data) == Protocol("pyslowfast", "random")           # the defaults
    cfg = small_cfg(str(tmp_path), str(tmp_path), "data.protocol=mmaction2", "data.val_mode=random")
    assert Protocol.from_data(cfg.data) == Protocol("mmaction2", "random")


def test_view_order_pyslowfast_temporal_major_mmaction2_crop_major():
    spec = ClipSpec(8, 8, num_ensemble_views=4, num_spatial_crops=3)
    assert [Protocol("pyslowfast").split_view(k, spec) for k in range(5)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [Protocol("mmaction2").split_view(k, spec) for k in range(5)] == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1)]
    with pytest.raises(ValueError):
        Protocol("pyslowfast").split_view(12, spec)
    for name in PROTOCOLS:                                          # view_number inverts split_view
        assert [Protocol(name).view_number(*Protocol(name).split_view(k, spec), spec) for k in range(12)] == \
            list(range(12))


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


def test_clip_spec_from_the_data_section(tmp_path):
    cfg = small_cfg(str(tmp_path), str(tmp_path))
    spec = ClipSpec.from_data(cfg.data, cfg.test.num_ensemble_views, cfg.test.num_spatial_crops)
    assert (spec.num_frames, spec.train_jitter_scales, spec.num_spatial_crops) == (4, (40, 48), 3)
    assert spec.train_crop_size == 32 and spec.num_ensemble_views == 2 and spec.random_flip is True
    assert ClipSpec.from_data(cfg.data).num_ensemble_views == ClipSpec.from_data(cfg.data).num_spatial_crops == 1


@pytest.mark.parametrize("protocol, split, bad, good, message", [
    ("pyslowfast", "train", "data.train_jitter_scales=[28,40]", "data.train_jitter_scales=[32,40]",
     "data.train_jitter_scales[0]=28 must be >= data.train_crop_size=32"),
    ("videoattn", "val", "data.train_jitter_scales=[28,40]", "data.train_crop_size=28",
     "data.train_jitter_scales[0]=28 must be >= data.train_crop_size=32"),
    ("pyslowfast", "test", "data.test_crop_size=48", "data.test_crop_size=40",
     "data.train_jitter_scales[0]=40 must be >= data.test_crop_size=48"),
    ("mmaction2", "test", "data.test_crop_size=32", "data.test_crop_size=40",
     "data.test_crop_size=32 equal to data.train_jitter_scales[0]=40"),
])
def test_crops_that_cannot_fit_fail_at_build_with_one_line(synthetic_root, tmp_path, protocol, split, bad, good, message):
    """PySlowFast would return a smaller crop (a batch of mixed sizes) and mmaction2's ThreeCrop
    raises mid-epoch: checked once, when the dataset is built, naming the keys."""
    base = [f"data.protocol={protocol}", f"test.num_spatial_crops={1 if protocol == 'pyslowfast' else 3}"]

    def build(*opts):
        cfg = small_cfg(synthetic_root, str(tmp_path), *base, *opts)
        return build_dataset(cfg.data, split, cfg.test.num_ensemble_views, cfg.test.num_spatial_crops)

    with pytest.raises(ValueError) as e:
        build(bad)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert len(build(bad, good)) > 0                                # the same keys, fitting


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
