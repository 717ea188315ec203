"""Spatial protocols against the references' own code: crop boxes and resize sizes from PySlowFast's
``transform`` functions (pyslowfast 1.0) and mmaction2's ``Resize`` / ``CenterCrop`` / ``ThreeCrop``
(1.2.0); pixels on the same decoded frames.

Pixel tolerances (a normalised value is ``(x / 255 - 0.45) / 0.225``):

* float input: PySlowFast resizes normalised floats, ours resizes whatever it is given; bilinear
  weights sum to 1, so normalising before or after differs only by float32 rounding: ``1e-5``.
* uint8 input: torch's uint8 bilinear runs two separable passes, each rounded to uint8 (at most
  0.5 level each) with fixed-point weights; the whole is within 1 level of the float result plus
  the weights' quantisation (measured at most 1.006 levels): ``1.1 / 255 / 0.225 = 0.0192``.
* mmaction2 (uint8 on both sides): ``cv2.resize`` is also separable fixed-point with rounding;
  the two differ by at most 1 level (measured), so 1 level.
"""
import numpy as np
import pytest
import torch

from reference_helpers import box_of, coordinate_frames, normalize_slowfast, reference, seeded_globals
from torchvision.transforms.v2 import functional as F

from videoattn.data import protocol_spatial as S
from videoattn.data.decoding import open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.datasets.synthetic import make_indexed_video

sf_transform = reference("slowfast.datasets.transform")
mm_processing = reference("mmaction.datasets.transforms.processing")

FLOAT_TOL = 1e-5
UINT8_TOL = 1.1 / 255 / 0.225
SHAPES = [(96, 160), (128, 96), (240, 320), (360, 640), (720, 1280), (480, 360), (256, 256), (257, 341),
          (341, 257), (100, 100), (99, 101),
          (112, 122), (122, 112), (84, 366)]   # at 224, floor(w / h * 224) != int(224 * w / h) (float rounding)


@pytest.mark.parametrize("h, w", SHAPES)
def test_pyslowfast_scaled_sizes_equal_reference(h, w):
    for size in (224, 256, 288, 300, 301, 320, 64, 100):
        theirs = sf_transform.random_short_side_scale_jitter(torch.zeros(1, 1, h, w), size, size)[0]
        assert S.pyslowfast_scaled_size(h, w, size) == tuple(theirs.shape[-2:]), size


@pytest.mark.parametrize("h, w", SHAPES)
def test_pyslowfast_uniform_crop_boxes_equal_reference(h, w):
    frames = coordinate_frames(h, w)
    for size in {min(h, w), min(h, w) - 1, min(h, w) - 2, 64}:
        for idx in (0, 1, 2):
            theirs = box_of(sf_transform.uniform_crop(frames, size, idx)[0])
            assert S.pyslowfast_uniform_crop_box(h, w, size, idx) == theirs, (size, idx)


def test_centre_crop_offset_rounds_up_as_pyslowfast():
    """The issue's 1-pixel shift turned to equal: (341 - 224) / 2 = 58.5 -> PySlowFast's 59 (the
    project used to round down, to 58); mmaction2's CenterCrop does round down."""
    h, w, size = 256, 341, 224
    theirs = box_of(sf_transform.uniform_crop(coordinate_frames(h, w), size, 1)[0])
    assert S.pyslowfast_uniform_crop_box(h, w, size, 1) == theirs == (16, 59)
    assert S.mmaction_center_crop_box(h, w, size) == (16, 58)


@pytest.mark.parametrize("h, w", [(96, 160), (128, 96), (256, 341), (64, 64)])
def test_pyslowfast_random_crop_boxes_equal_reference(h, w):
    boxes = set()
    for seed in range(30):
        with seeded_globals(seed):
            out = sf_transform.random_crop(coordinate_frames(h, w), 64)
        theirs = box_of(out if torch.is_tensor(out) else out[0])  # 1.0 returns a bare tensor when frame == crop
        ours = S.pyslowfast_random_crop_box(h, w, 64, np.random.RandomState(seed))
        assert ours == theirs, seed
        boxes.add(ours)
    assert len(boxes) > 1 or (h, w) == (64, 64)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """uint8 (T, H, W, 3) frames of real videos: landscape, portrait and a large one (downscaled)."""
    folder = tmp_path_factory.mktemp("protocol_spatial")
    out = {}
    for name, (w, h) in {"landscape": (160, 96), "portrait": (96, 128), "large": (480, 360)}.items():
        path = str(folder / f"{name}.webm")
        make_indexed_video(path, 6, 25, width=w, height=h)
        video = open_video(path, backend="pyav")
        out[name] = video.get_frames(list(range(6)))
        video.close()
    return out


def _slowfast_test_view(frames, scale, crop, spatial_idx):
    """PySlowFast's test-mode spatial_sampling (HEAD utils.spatial_sampling): jitter with min = max,
    then uniform_crop, on normalised float (3, T, H, W)."""
    x, _ = sf_transform.random_short_side_scale_jitter(normalize_slowfast(frames), scale, scale)
    return sf_transform.uniform_crop(x, crop, spatial_idx)[0]


def _as_slowfast(video_t3hw):
    """Ours (T, 3, S, S), uint8 or already normalised float -> normalised float (3, T, S, S)."""
    if video_t3hw.dtype == torch.uint8:
        return normalize_slowfast(video_t3hw.permute(0, 2, 3, 1))
    return video_t3hw.permute(1, 0, 2, 3)


def _inputs(frames):
    """The same decoded frames as uint8 (T, 3, H, W) and as PySlowFast's normalised floats."""
    return {"uint8": (frames.permute(0, 3, 1, 2), UINT8_TOL),
            "float": (normalize_slowfast(frames).permute(1, 0, 2, 3), FLOAT_TOL)}


@pytest.mark.parametrize("name", ["landscape", "portrait", "large"])
@pytest.mark.parametrize("num_crops, test_crop", [(3, 64), (1, 56), (1, 64)])
def test_pyslowfast_test_pixels_equal_reference(decoded, name, num_crops, test_crop):
    """Kinetics test mode (HEAD): 3 crops at short side TEST_CROP_SIZE; 1 crop = the centre one
    (index 1) at short side TRAIN_JITTER_SCALES[0]."""
    spec = ClipSpec(6, 1, train_jitter_scales=(72, 90), train_crop_size=56, test_crop_size=test_crop,
                    num_ensemble_views=1, num_spatial_crops=num_crops)
    protocol = Protocol("pyslowfast")
    scale = test_crop if num_crops == 3 else 72
    for kind, (video, tol) in _inputs(decoded[name]).items():
        resized = protocol.test_resize(video, spec)
        for crop_index in range(num_crops):
            theirs = _slowfast_test_view(decoded[name], scale, test_crop, crop_index if num_crops == 3 else 1)
            ours = _as_slowfast(protocol.test_crop(resized, crop_index, spec))
            assert ours.shape == theirs.shape
            assert (ours - theirs).abs().max() <= tol, (kind, crop_index)


def test_single_crop_test_view_resizes_to_train_jitter_scale_as_pyslowfast(decoded):
    """The issue's 1-crop mismatch turned to equal: one spatial crop with test_crop_size 56 resizes
    the short side to TRAIN_JITTER_SCALES[0] (72) as PySlowFast's Kinetics test path does (the
    project used to resize it to 56); the two are different pictures, so the check can fail."""
    frames = decoded["large"]
    theirs = _slowfast_test_view(frames, 72, 56, 1)
    assert (_slowfast_test_view(frames, 56, 56, 1) - theirs).abs().max() > 0.5
    spec = ClipSpec(6, 1, train_jitter_scales=(72, 90), train_crop_size=56, test_crop_size=56, num_spatial_crops=1)
    protocol = Protocol("pyslowfast")
    after = protocol.test_crop(protocol.test_resize(frames.permute(0, 3, 1, 2), spec), 0, spec)
    assert (_as_slowfast(after) - theirs).abs().max() <= UINT8_TOL


def test_resize_is_plain_bilinear_as_pyslowfast(decoded):
    """The issue's antialiasing mismatch turned to equal: the downscale is plain bilinear within
    the uint8 tolerance of PySlowFast's; an antialiased one (the project's former resize) is far
    outside it."""
    frames = decoded["large"]                                       # 480x360 -> short side 64
    theirs = sf_transform.random_short_side_scale_jitter(normalize_slowfast(frames), 64, 64)[0]
    ours = S.pyslowfast_test_resize(frames.permute(0, 3, 1, 2), 64)
    assert ours.shape[-2:] == theirs.shape[-2:] == (64, 85)
    assert (_as_slowfast(ours) - theirs).abs().max() <= UINT8_TOL
    antialiased = F.resize(frames.permute(0, 3, 1, 2), [64], antialias=True)
    assert (_as_slowfast(antialiased) - theirs).abs().max() > 10 * UINT8_TOL


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resize_equals_torchvisions_bit_for_bit(decoded, dtype):
    """S.resize calls torch's bilinear kernel itself (torchvision's import costs ~1 s per process):
    the pixels equal torchvision's ``resize`` exactly, for the channels-last view the loader makes,
    a contiguous copy, one frame, a cropped view, 5-D input, up- and downscaling."""
    frames = decoded["large"] if dtype == torch.uint8 else torch.rand(3, 99, 101, 3)
    video = frames.permute(0, 3, 1, 2)                              # channels-last, as transforms.to_tchw
    cases = [video, video.contiguous(), video[:1], video[1:2, :, 3:90, 5:], video.unsqueeze(0).expand(2, -1, -1, -1, -1)]
    for case in cases:
        for size in [(64, 85), (85, 64), (150, 121), (37, 53)]:
            theirs = F.resize(case, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=False)
            ours = S.resize(case, size)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, (case.shape, size)
            assert torch.equal(ours, theirs), (case.shape, size)


@pytest.mark.parametrize("name", ["landscape", "portrait", "large"])
def test_pyslowfast_train_pixels_equal_reference(decoded, name):
    """spatial_sampling(-1): jitter, random crop, flip, seeded alike (np.random.seed / RandomState)."""
    flipped = set()
    for seed in range(8):
        with seeded_globals(seed):
            x, _ = sf_transform.random_short_side_scale_jitter(normalize_slowfast(decoded[name]), 72, 90)
            x, _ = sf_transform.random_crop(x, 56)
            theirs, _ = sf_transform.horizontal_flip(0.5, x)
        for kind, (video, tol) in _inputs(decoded[name]).items():
            ours = S.pyslowfast_train_view(video, 72, 90, 56, True, np.random.RandomState(seed))
            assert (_as_slowfast(ours) - theirs).abs().max() <= tol, (seed, kind)
        unflipped = S.pyslowfast_train_view(_inputs(decoded[name])["float"][0], 72, 90, 56, False,
                                            np.random.RandomState(seed))
        flipped.add(bool((_as_slowfast(unflipped) - theirs).abs().max() > FLOAT_TOL))
    assert flipped == {True, False}                                 # both branches were compared
