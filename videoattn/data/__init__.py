"""Kinetics-style video data: annotations, decord decoding, sampling protocols, transforms, loaders.

    from videoattn.data import build_dataset, build_loader
    dataset = build_dataset(cfg.data, "train")
    loader = build_loader(dataset, cfg.data, batch_size=8)   # batch: clip (B,3,T,H,W), label, ..., skipped

The names below are imported on first use (PEP 562): importing a torch-free module of this
package (``videoattn.datasets.prepare``, ``prepare_run``, ``annotations``) does not import torch, so
the worker processes of ``tools/prepare_data.py`` start in a fraction of the time.
"""
import importlib

import av  # noqa: F401  -- load PyAV's FFmpeg before decord's bundled one (else PyAV's VP9 encoder fails)

_LAZY = {
    "AnnotationError": "annotations", "read_annotations": "annotations",
    "BrokenVideosError": "dataset", "VideoClipDataset": "dataset", "build_dataset": "dataset",
    "DecodeError": "decoding", "open_video": "decoding",
    "build_loader": "loader", "collate": "loader", "videos_per_batch": "loader",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
