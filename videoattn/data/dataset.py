"""The clip dataset: annotations -> decoded, sampled, transformed clips, with the broken-file policy.

Which frames and pixels make each clip is ``data.protocol``'s (:mod:`videoattn.data.protocols`).
Items are dicts (see :class:`VideoClipDataset`). Broken videos (missing, empty, truncated, not a
video, no frames, decode timeout):

* train / val: another random video is tried instead (at most ``data.num_retries`` times, like
  PySlowFast's NUM_RETRIES); every failed path is recorded in the item's ``skipped`` list
  ``[(path, reason)]`` which the loader's collate turns into ``batch["skipped"]``. Only when every
  retry fails does it raise, naming the paths.
* test: never substituted; the item has ``valid=False``, ``error=<reason>`` and a zero clip.

``data.clips_per_video`` = N > 1 (train only; PySlowFast's ``AUG.NUM_SAMPLE``, mmaction2's
``RepeatAugDataset``): an item is still one video, with N clips drawn as N independent training
clips (own seed each: own start, scale, crop, flip) but decoded together, one open and one
``get_frames`` of the union of their frames; the loader's collate flattens them into N clips.
"""
from __future__ import annotations

import logging
import os
import random
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from videoattn.data import transforms
from videoattn.data.annotations import Annotations, read_annotations
from videoattn.data.decoding import DecodeError, config_backend, open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.config import DataConfig
from videoattn.utils.distributed import is_main_process
from videoattn.utils.io import atomic_write_text
from videoattn.utils.errors import UsageError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class BrokenVideosError(RuntimeError):
    """Every retry of a train/val item hit a broken video."""


def draw_seed() -> int:
    """A training item's seed, drawn from torch's generator (seeded per DataLoader worker): its clip
    start comes from ``random.Random(seed)`` and its scale, crop and flip from
    ``np.random.RandomState(seed)``, the two generators PySlowFast draws them from."""
    return int(torch.randint(0, 2 ** 32, (1,)))


class VideoClipDataset(Dataset):
    """Clips of the videos of one split.

    Attributes:
        classes: class names (label index order).
        videos: [(path, label)].
        missing: annotation rows whose file is absent ("file:line: expected name (label)").
        num_views: clips per video: ``test.num_ensemble_views * test.num_spatial_crops`` in test, else 1.
        clips_per_video: N clips per train item (``data.clips_per_video``); 1 for val and test.
        protocol, spec: the :class:`Protocol` and :class:`ClipSpec` that sample and crop.

    Item ``i``: video ``i // num_views``; in test, temporal clip ``k // num_crops`` and crop
    ``k % num_crops`` of ``k = i % num_views``, numbered ``view_index`` as the protocol's reference
    numbers its views (PySlowFast: ``k``; mmaction2: crop-major)::

        clip: float32 (3, T, S, S) normalised (uint8 if data.normalize_on_device)
        label: int   video_index: int   view_index: int   frame_indices: int64 (T,) the video's frames
        valid: bool (False only for a broken test video; clip is zeros, frame_indices -1)   error: str ("" if fine)
        skipped: [(path, reason)] broken videos replaced while producing this item (train/val)

    Train with ``clips_per_video`` = N > 1: ``clip`` is (N, 3, T, S, S) and ``frame_indices`` (N, T),
    clip ``k`` drawn with seed ``k`` of N :func:`draw_seed` calls; the other keys are per video.
    ``len`` stays the number of videos (an epoch is one pass over the videos: N clips each).
    """

    def __init__(self, data: DataConfig, split: str, annotations: Annotations, num_clips: int = 1,
                 num_crops: int = 1):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.data, self.split = data, split
        self.classes: List[str] = list(annotations.classes)
        self.videos: List[Tuple[str, int]] = list(annotations.videos)
        self.missing: List[str] = list(annotations.missing)
        self.source = annotations.source
        self.backend = config_backend(data)
        self.decode_timeout = data.decode_timeout or None
        # test: num_clips temporal clips x num_crops spatial crops per video; train/val: one view
        self.num_temporal, self.num_crops = (num_clips, num_crops) if split == "test" else (1, 1)
        self.num_views = self.num_temporal * self.num_crops
        self.clips_per_video = data.clips_per_video if split == "train" else 1
        self.protocol = Protocol.from_data(data)
        self.spec = ClipSpec.from_data(data, self.num_temporal, self.num_crops)
        self.protocol.check(self.spec, split)
        self.normalize = not data.normalize_on_device  # False: uint8 clips, normalised on the device
        self._cache: Tuple[Optional[tuple], object] = (None, None)

    def __len__(self) -> int:
        return len(self.videos) * self.num_views

    # ------------------------------------------------------------------------------------ decoding
    def clip_indices(self, video_frames: int, fps: float, temporal: int = 0, seed: Optional[int] = None) -> np.ndarray:
        """This split's clip of a video (int64 ``(T,)``): train/val draw from ``random.Random(seed)``
        (val only when ``data.val_mode`` is random), test takes temporal view ``temporal``."""
        p, spec = self.protocol, self.spec
        if self.split == "test":
            return p.test_indices(video_frames, fps, temporal, spec)
        take = p.train_indices if self.split == "train" else p.val_indices
        return take(video_frames, fps, spec, random.Random(seed))

    def read_clip(self, path: str, temporal: int = 0, seed: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Decode :meth:`clip_indices` of ``path`` -> (uint8 (T, H, W, 3) frames, int64 (T,) frame
        indices of the video); DecodeError if broken."""
        video = open_video(path, self.data.decode_threads, self.decode_timeout, self.backend)
        try:
            idx = self.clip_indices(video.num_frames, video.fps, temporal, seed)
            return video.get_frames(idx), torch.from_numpy(idx)
        finally:
            video.close()

    def read_clips(self, path: str, seeds: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The N training clips of ``seeds`` (one each, as :meth:`clip_indices`) from ONE open of
        ``path`` and ONE ``get_frames`` of the sorted union of their frames -> (uint8 (N, T, H, W, 3)
        frames, int64 (N, T) frame indices); DecodeError if broken."""
        video = open_video(path, self.data.decode_threads, self.decode_timeout, self.backend)
        try:
            idx = np.stack([self.clip_indices(video.num_frames, video.fps, seed=s) for s in seeds])
            union, where = np.unique(idx, return_inverse=True)
            frames = video.get_frames(union)  # (U, H, W, 3)
            return frames[torch.from_numpy(where.reshape(idx.shape))], torch.from_numpy(idx)
        finally:
            video.close()

    def _multi_clip(self, path: str, seeds: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(clips (N, 3, T, S, S), frame indices (N, T)): :meth:`read_clips`, then the training view
        of each clip with its own ``np.random.RandomState(seed)``."""
        frames, idx = self.read_clips(path, seeds)
        views = [self.protocol.train_view(transforms.to_tchw(f), self.spec, np.random.RandomState(s))
                 for f, s in zip(frames, seeds)]
        return torch.stack([transforms.to_clip(v, self.data, self.normalize) for v in views]), idx

    def _train_val_item(self, index: int) -> dict:
        skipped: List[Tuple[str, str]] = []
        for _ in range(self.data.num_retries + 1):
            path, label = self.videos[index]
            seed = draw_seed() if self.split == "train" else index  # val: one fixed draw per video
            try:
                if self.clips_per_video > 1:
                    clip, idx = self._multi_clip(path, [seed] + [draw_seed() for _ in range(self.clips_per_video - 1)])
                else:
                    frames, idx = self.read_clip(path, seed=seed)
                    view = self.protocol.train_view if self.split == "train" else self.protocol.val_view
                    clip = view(transforms.to_tchw(frames), self.spec, np.random.RandomState(seed))
                    clip = transforms.to_clip(clip, self.data, self.normalize)
                return dict(clip=clip, label=label, video_index=index, view_index=0, frame_indices=idx, valid=True,
                            error="", skipped=skipped)
            except DecodeError as e:
                skipped.append((path, e.reason))
                index = int(torch.randint(0, len(self.videos), (1,)))
        lines = "\n".join(f"  {p}: {r}" for p, r in skipped)
        raise BrokenVideosError(f"{len(skipped)} videos in a row could not be decoded "
                                f"(data.num_retries={self.data.num_retries}):\n{lines}")

    def _test_item(self, i: int) -> dict:
        video_index, k = divmod(i, self.num_views)
        temporal, crop = divmod(k, self.num_crops)  # items temporal-major: the crops of a clip share a decode
        path, label = self.videos[video_index]
        key, cached = self._cache
        if key != (video_index, temporal):
            try:
                frames, idx = self.read_clip(path, temporal)
                cached = (self.protocol.test_resize(transforms.to_tchw(frames), self.spec), idx)
            except DecodeError as e:
                cached = e
            self._cache = ((video_index, temporal), cached)
        view = self.protocol.view_number(temporal, crop, self.spec)
        item = dict(label=label, video_index=video_index, view_index=view, skipped=[])
        if isinstance(cached, DecodeError):
            size, t = self.data.test_crop_size, self.data.num_frames
            zeros = torch.zeros(3, t, size, size, dtype=torch.float32 if self.normalize else torch.uint8)
            no_frames = torch.full((t,), -1, dtype=torch.int64)
            return dict(item, clip=zeros, frame_indices=no_frames, valid=False, error=cached.reason)
        video, idx = cached
        clip = transforms.to_clip(self.protocol.test_crop(video, crop, self.spec), self.data, self.normalize)
        return dict(item, clip=clip, frame_indices=idx, valid=True, error="")

    def __getitem__(self, i: int) -> dict:
        if self.split == "test":
            return self._test_item(i)
        return self._train_val_item(i)

    # -------------------------------------------------------------------------------------- report
    def write_missing_report(self, output_dir: str) -> Optional[str]:
        """Write ``missing_videos_<split>.txt`` (one annotation row per line) if any; return its path."""
        if not self.missing:
            return None
        path = os.path.join(output_dir, missing_report_name(self.split))
        header = f"# {len(self.missing)} rows of {self.source} name files not found under {self.data.root}\n"
        atomic_write_text(path, header + "".join(m + "\n" for m in self.missing))
        return path


def missing_report_name(split: str) -> str:
    """The name of :meth:`VideoClipDataset.write_missing_report`'s file."""
    return f"missing_videos_{split}.txt"


def split_file(data: DataConfig, split: str) -> str:
    """The annotation file/folder of ``split`` (test falls back to the validation split)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return {"train": data.train_split, "val": data.val_split, "test": data.test_split or data.val_split}[split]


def build_dataset(data: DataConfig, split: str, num_clips: int = 1, num_crops: int = 1,
                  report_dir: Optional[str] = None) -> VideoClipDataset:
    """The dataset of ``split`` (train | val | test) described by ``data`` (``cfg.data``); a test
    split has ``num_clips`` x ``num_crops`` views per video (``test.num_ensemble_views`` x
    ``test.num_spatial_crops``).

    Missing files are announced once (on the main process) with their count and listed in
    ``<report_dir>/missing_videos_<split>.txt``; malformed annotation lines raise AnnotationError.
    """
    ann = read_annotations(data.root, split_file(data, split), data.train_split, data.classes_file, split)
    dataset = VideoClipDataset(data, split, ann, num_clips, num_crops)
    if dataset.missing and is_main_process():
        report = dataset.write_missing_report(report_dir) if report_dir else None
        log.warning("%s: %d of %d annotated videos are missing under %s%s", split, len(dataset.missing),
                    len(dataset.missing) + len(dataset.videos), data.root, f"; listed in {report}" if report else "")
    if not dataset.videos:
        raise UsageError(f"{split}: no videos found for {ann.source} under {data.root} "
                         f"({len(dataset.missing)} annotated files missing)")
    return dataset
