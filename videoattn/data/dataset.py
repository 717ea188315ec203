"""The clip dataset: annotations -> decoded, sampled, transformed clips, with the broken-file policy.

Items are dicts (see :class:`VideoClipDataset`). Broken videos (missing, empty, truncated, not a
video, no frames, decode timeout):

* train / val: another random video is tried instead (at most ``data.num_retries`` times, like
  PySlowFast's NUM_RETRIES); every failed path is recorded in the item's ``skipped`` list
  ``[(path, reason)]`` which the loader's collate turns into ``batch["skipped"]``. Only when every
  retry fails does it raise, naming the paths.
* test: never substituted; the item has ``valid=False``, ``error=<reason>`` and a zero clip.
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from videoattn.data import transforms
from videoattn.data.annotations import Annotations, read_annotations
from videoattn.data.decoding import DecodeError, config_backend, open_video
from videoattn.data.sampling import clip_indices
from videoattn.config import DataConfig
from videoattn.utils.distributed import is_main_process
from videoattn.utils.io import atomic_write_text

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class BrokenVideosError(RuntimeError):
    """Every retry of a train/val item hit a broken video."""


class VideoClipDataset(Dataset):
    """Clips of the videos of one split.

    Attributes:
        classes: class names (label index order).
        videos: [(path, label)].
        missing: annotation rows whose file is absent ("file:line: expected name (label)").
        num_views: clips per video: ``test.num_ensemble_views * test.num_spatial_crops`` in test, else 1.

    Item ``i`` (video ``i // num_views``, view ``i % num_views``)::

        clip: float32 (3, T, S, S) normalised (uint8 if data.normalize_on_device)
        label: int   video_index: int   view_index: int   frame_indices: int64 (T,) the video's frames
        valid: bool (False only for a broken test video; clip is zeros, frame_indices -1)   error: str ("" if fine)
        skipped: [(path, reason)] broken videos replaced while producing this item (train/val)
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
        self.normalize = not data.normalize_on_device  # False: uint8 clips, normalised on the device
        self._cache: Tuple[Optional[tuple], object] = (None, None)

    def __len__(self) -> int:
        return len(self.videos) * self.num_views

    # ------------------------------------------------------------------------------------ decoding
    def sample_clip(self, path: str, clip_index: int, num_clips: int,
                    rng: Optional[np.random.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Clip ``clip_index`` of ``num_clips`` (-1: random) -> (uint8 (T, H, W, 3) frames, int64 (T,)
        frame indices, clamped to the video); DecodeError if broken."""
        d = self.data
        video = open_video(path, d.decode_threads, self.decode_timeout, self.backend)
        try:
            idx = clip_indices(video.num_frames, video.fps, d.num_frames, d.sampling_rate, d.target_fps,
                               clip_index, num_clips, rng)
            return video.get_frames(idx), torch.from_numpy(idx)
        finally:
            video.close()

    def _train_val_item(self, index: int) -> dict:
        skipped: List[Tuple[str, str]] = []
        for _ in range(self.data.num_retries + 1):
            path, label = self.videos[index]
            try:
                if self.split == "train":
                    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,))))
                    frames, idx = self.sample_clip(path, -1, 1, rng)
                    clip = transforms.train_clip(frames, self.data, normalize=self.normalize)
                else:
                    frames, idx = self.sample_clip(path, 0, 1)
                    clip = transforms.val_clip(frames, self.data, self.normalize)
                return dict(clip=clip, label=label, video_index=index, view_index=0, frame_indices=idx, valid=True,
                            error="", skipped=skipped)
            except DecodeError as e:
                skipped.append((path, e.reason))
                index = int(torch.randint(0, len(self.videos), (1,)))
        lines = "\n".join(f"  {p}: {r}" for p, r in skipped)
        raise BrokenVideosError(f"{len(skipped)} videos in a row could not be decoded "
                                f"(data.num_retries={self.data.num_retries}):\n{lines}")

    def _test_item(self, i: int) -> dict:
        video_index, view = divmod(i, self.num_views)
        temporal, crop = divmod(view, self.num_crops)
        path, label = self.videos[video_index]
        key, cached = self._cache
        if key != (video_index, temporal):  # the crops of one temporal clip share one decode
            try:
                frames, idx = self.sample_clip(path, temporal, self.num_temporal)
                cached = (transforms.resize_for_test(frames, self.data), idx)
            except DecodeError as e:
                cached = e
            self._cache = ((video_index, temporal), cached)
        item = dict(label=label, video_index=video_index, view_index=view, skipped=[])
        if isinstance(cached, DecodeError):
            size, t = self.data.test_crop_size, self.data.num_frames
            zeros = torch.zeros(3, t, size, size, dtype=torch.float32 if self.normalize else torch.uint8)
            no_frames = torch.full((t,), -1, dtype=torch.int64)
            return dict(item, clip=zeros, frame_indices=no_frames, valid=False, error=cached.reason)
        video, idx = cached
        clip = transforms.test_crop(video, self.data, crop, self.num_crops, self.normalize)
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
        path = os.path.join(output_dir, f"missing_videos_{self.split}.txt")
        header = f"# {len(self.missing)} rows of {self.source} name files not found under {self.data.root}\n"
        atomic_write_text(path, header + "".join(m + "\n" for m in self.missing))
        return path


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
        raise ValueError(f"{split}: no videos found for {ann.source} under {data.root} "
                         f"({len(dataset.missing)} annotated files missing)")
    return dataset
