"""Kinetics-style video data: annotations, decord decoding, sampling protocols, transforms, loaders.

    from videoattn.data import build_dataset, build_loader
    dataset = build_dataset(cfg.data, "train")
    loader = build_loader(dataset, cfg.data, batch_size=8)   # batch: clip (B,3,T,H,W), label, ..., skipped
"""
import av  # noqa: F401  -- load PyAV's FFmpeg before decord's bundled one (else PyAV's VP9 encoder fails)

from videoattn.data.annotations import AnnotationError, read_annotations
from videoattn.data.dataset import BrokenVideosError, VideoClipDataset, build_dataset
from videoattn.data.decoding import DecodeError, open_video
from videoattn.data.loader import build_loader, collate

__all__ = ["AnnotationError", "BrokenVideosError", "DecodeError", "VideoClipDataset", "build_dataset",
           "build_loader", "collate", "open_video", "read_annotations"]
