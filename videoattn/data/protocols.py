"""Evaluation protocols (``data.protocol``): which frames and which pixels make each clip.

* ``pyslowfast`` (default): PySlowFast's Kinetics dataset exactly. Train: a random clip
  (``num_frames`` indices by linspace over ``num_frames x sampling_rate`` frames at ``target_fps``,
  converted to the video's fps), short-side jitter in ``train_jitter_scales``, random
  ``train_crop_size`` crop, horizontal flip. Val (``data.val_mode``): ``random`` = as training,
  PySlowFast's own validation; ``centre`` = a deterministic centre view (centre clip
  ``floor(delta / 2)``, short side ``train_jitter_scales[0]``, centre ``train_crop_size`` crop),
  which PySlowFast does not have. Test: view ``k`` = temporal view ``k // crops`` (starting at
  ``delta * i / N``) and crop ``k % crops``; 3 crops of ``test_crop_size`` after resizing the short
  side to ``test_crop_size``, or 1 centre crop after resizing it to ``train_jitter_scales[0]``.
* ``mmaction2``: mmaction2's I3D val / test pipelines (``SampleFrames(num_frames, sampling_rate,
  N, test_mode=True)``, ``Resize((-1, train_jitter_scales[0]))``, ``ThreeCrop(test_crop_size)`` or
  ``CenterCrop``); views numbered crop-major (``k = crop * N + clip``, as its ``FormatShape``);
  val ``centre`` (its default) is its val pipeline (centre clip, ``CenterCrop(train_crop_size)``).
  ``sampling_rate`` counts the video's own frames (mmaction2 ignores the frame rate). Training,
  and val ``random``, are PySlowFast's (mmaction2's ``MultiScaleCrop`` is not reproduced).
* ``videoattn``: this project's own temporal convention (no reference; see
  :func:`videoattn.data.protocol_temporal.videoattn_clip_indices`): test views spread from the first
  to the last possible start, so together they cover the whole video; one view and val ``centre``
  (its default) = the centre clip. Pixels as ``pyslowfast``.

Feature windows (:mod:`videoattn.data.windows`) and single clips (attention pictures) use the
same temporal convention (:meth:`Protocol.window_indices`). Details and the reference each
function matches: :mod:`videoattn.data.protocol_temporal`, :mod:`videoattn.data.protocol_spatial`.
Videos are ``(T, 3, H, W)`` tensors (uint8 or float).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from videoattn.data import protocol_spatial as S
from videoattn.data import protocol_temporal as T
from videoattn.utils.errors import UsageError

PROTOCOLS = ("pyslowfast", "mmaction2", "videoattn")
VAL_MODES = ("random", "centre")
DEFAULT_VAL = {"pyslowfast": "random", "mmaction2": "centre", "videoattn": "centre"}


@dataclass(frozen=True)
class ClipSpec:
    """The numbers a protocol needs (``data.*`` keys of the same names, and the views per video)."""
    num_frames: int
    sampling_rate: int
    target_fps: float = 30.0
    train_jitter_scales: Tuple[int, int] = (256, 320)
    train_crop_size: int = 224
    test_crop_size: int = 256
    random_flip: bool = True
    num_ensemble_views: int = 10
    num_spatial_crops: int = 3

    @classmethod
    def from_data(cls, data, num_ensemble_views: int = 1, num_spatial_crops: int = 1) -> "ClipSpec":
        """From the ``data`` config section (any object with those attributes) and the test views
        (``test.num_ensemble_views`` x ``test.num_spatial_crops``; features: 1 x its crops)."""
        lo, hi = (int(s) for s in data.train_jitter_scales)
        return cls(int(data.num_frames), int(data.sampling_rate), float(data.target_fps), (lo, hi),
                   int(data.train_crop_size), int(data.test_crop_size), bool(data.random_flip),
                   int(num_ensemble_views), int(num_spatial_crops))


@dataclass(frozen=True)
class Protocol:
    """A protocol's choices; ``val`` None = the protocol's default (:data:`DEFAULT_VAL`)."""
    name: str = "pyslowfast"
    val: Optional[str] = None

    def __post_init__(self):
        if self.name not in PROTOCOLS:
            raise UsageError(f"data.protocol must be one of {', '.join(PROTOCOLS)}, got {self.name!r}")
        if self.val is None:
            object.__setattr__(self, "val", DEFAULT_VAL[self.name])
        if self.val not in VAL_MODES:
            raise UsageError(f"data.val_mode must be one of {', '.join(VAL_MODES)}, got {self.val!r}")

    @classmethod
    def from_data(cls, data) -> "Protocol":
        """``data.protocol`` with ``data.val_mode`` ("" = the protocol's own)."""
        return cls(data.protocol, data.val_mode or None)

    def check(self, spec: ClipSpec, split: str) -> None:
        """A one-line UsageError, naming the keys, if ``split``'s crops cannot fit its resized frames."""
        lo, crop, test = spec.train_jitter_scales[0], spec.train_crop_size, spec.test_crop_size
        if split in ("train", "val") and lo < crop:
            raise UsageError(f"data.train_jitter_scales[0]={lo} must be >= data.train_crop_size={crop}: "
                             f"{split} crops train_crop_size from frames whose short side is in train_jitter_scales")
        if split != "test" or (spec.num_spatial_crops == 3 and self.name != "mmaction2"):
            return
        if spec.num_spatial_crops == 3 and test != lo:
            raise UsageError(f"protocol mmaction2 with 3 crops needs data.test_crop_size={test} equal to "
                             f"data.train_jitter_scales[0]={lo} (ThreeCrop spans the resized short side)")
        if spec.num_spatial_crops == 1 and lo < test:
            raise UsageError(f"data.train_jitter_scales[0]={lo} must be >= data.test_crop_size={test}: one test "
                             f"crop is cut from frames resized to short side train_jitter_scales[0]")

    # ------------------------------------------------------------------------------ temporal
    def split_view(self, view: int, spec: ClipSpec) -> Tuple[int, int]:
        """Test view ``view`` (the reference's numbering) -> (temporal index, crop index)."""
        if not 0 <= view < spec.num_ensemble_views * spec.num_spatial_crops:
            raise ValueError(f"view {view} is not one of the {spec.num_ensemble_views} x {spec.num_spatial_crops}")
        if self.name == "mmaction2":
            crop_index, temporal = divmod(view, spec.num_ensemble_views)
            return temporal, crop_index
        return divmod(view, spec.num_spatial_crops)

    def view_number(self, temporal: int, crop_index: int, spec: ClipSpec) -> int:
        """Inverse of :meth:`split_view`: the reference's number of (temporal, crop)."""
        if self.name == "mmaction2":
            return crop_index * spec.num_ensemble_views + temporal
        return temporal * spec.num_spatial_crops + crop_index

    def train_indices(self, video_frames: int, fps: float, spec: ClipSpec, rng) -> np.ndarray:
        """A random training clip's frame indices (int64 ``(num_frames,)``); ``rng.uniform`` draws
        the start (a ``random.Random`` replays PySlowFast's Python ``random``)."""
        take = T.videoattn_clip_indices if self.name == "videoattn" else T.pyslowfast_clip_indices
        return take(video_frames, fps, spec.num_frames, spec.sampling_rate, spec.target_fps, -1, 1, rng)

    def val_indices(self, video_frames: int, fps: float, spec: ClipSpec, rng=None) -> np.ndarray:
        """The validation clip's frame indices (``rng``: only for ``val == "random"``)."""
        if self.val == "random":
            return self.train_indices(video_frames, fps, spec, rng)
        if self.name == "mmaction2":
            return T.mmaction_clip_indices(video_frames, spec.num_frames, spec.sampling_rate, 0, 1)
        if self.name == "videoattn":
            return T.videoattn_clip_indices(video_frames, fps, spec.num_frames, spec.sampling_rate,
                                            spec.target_fps, 0, 1)
        size = T.pyslowfast_clip_size(spec.num_frames, spec.sampling_rate, fps, spec.target_fps)
        return T.linspace_indices(T.pyslowfast_centre_start(video_frames, size), size, spec.num_frames, video_frames)

    def test_indices(self, video_frames: int, fps: float, temporal: int, spec: ClipSpec) -> np.ndarray:
        """Frame indices of temporal view ``temporal`` of ``spec.num_ensemble_views``."""
        n = spec.num_ensemble_views
        if self.name == "mmaction2":
            return T.mmaction_clip_indices(video_frames, spec.num_frames, spec.sampling_rate, temporal, n)
        take = T.videoattn_clip_indices if self.name == "videoattn" else T.pyslowfast_clip_indices
        return take(video_frames, fps, spec.num_frames, spec.sampling_rate, spec.target_fps, temporal, n)

    def window_indices(self, start: int, fps: float, spec: ClipSpec) -> np.ndarray:
        """The clip that starts at frame ``start`` (feature windows, a clip at a chosen time):
        int64 ``(num_frames,)``, not yet fitted to the video (see :meth:`fit`)."""
        if self.name == "mmaction2":
            return start + np.arange(spec.num_frames, dtype=np.int64) * spec.sampling_rate
        if self.name == "videoattn":
            return T.videoattn_spaced_indices(start, fps, spec.num_frames, spec.sampling_rate, spec.target_fps)
        size = T.pyslowfast_clip_size(spec.num_frames, spec.sampling_rate, fps, spec.target_fps)
        return T.linspace_indices(start, size, spec.num_frames, None)

    def window_seconds(self, fps: float, spec: ClipSpec) -> float:
        """A clip's nominal length: ``num_frames x sampling_rate`` frames at ``target_fps`` (mmaction2:
        at the video's own ``fps``)."""
        return spec.num_frames * spec.sampling_rate / (fps if self.name == "mmaction2" else spec.target_fps)

    def fit(self, indices: np.ndarray, video_frames: int) -> np.ndarray:
        """Indices past the end, as the protocol treats them: wrapped around (mmaction2's ``loop``)
        or the last frame repeated (PySlowFast's clamp)."""
        if self.name == "mmaction2":
            return np.mod(indices, video_frames)
        return np.clip(indices, 0, video_frames - 1)

    # ------------------------------------------------------------------------------- spatial
    def train_view(self, video: torch.Tensor, spec: ClipSpec, rng) -> torch.Tensor:
        """Training augmentation (PySlowFast's for every protocol): (T, 3, H, W) -> (T, 3, S, S)."""
        lo, hi = spec.train_jitter_scales
        return S.pyslowfast_train_view(video, lo, hi, spec.train_crop_size, spec.random_flip, rng)

    def val_view(self, video: torch.Tensor, spec: ClipSpec, rng=None) -> torch.Tensor:
        """The validation view: as training (``random``) or the centre ``train_crop_size`` crop."""
        if self.val == "random":
            return self.train_view(video, spec, rng)
        short = spec.train_jitter_scales[0]
        if self.name == "mmaction2":
            return S.mmaction_test_crop(S.mmaction_test_resize(video, short), 0, 1, spec.train_crop_size)
        return S.pyslowfast_test_crop(S.pyslowfast_test_resize(video, short), 0, 1, spec.train_crop_size)

    def test_resize(self, video: torch.Tensor, spec: ClipSpec) -> torch.Tensor:
        """The resize shared by the crops of one temporal view: (T, 3, H, W) -> (T, 3, H', W')."""
        if self.name == "mmaction2":
            return S.mmaction_test_resize(video, spec.train_jitter_scales[0])
        scale = S.pyslowfast_test_scale(spec.num_spatial_crops, spec.test_crop_size, spec.train_jitter_scales[0])
        return S.pyslowfast_test_resize(video, scale)

    def test_crop(self, resized: torch.Tensor, crop_index: int, spec: ClipSpec) -> torch.Tensor:
        """Crop ``crop_index`` of a :meth:`test_resize` output -> (T, 3, test_crop_size, test_crop_size)."""
        if self.name == "mmaction2":
            return S.mmaction_test_crop(resized, crop_index, spec.num_spatial_crops, spec.test_crop_size)
        return S.pyslowfast_test_crop(resized, crop_index, spec.num_spatial_crops, spec.test_crop_size)
