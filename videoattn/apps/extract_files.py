"""The files of a feature-extraction folder: per video ``<id>.json`` then ``<id>.npy`` (and
``scores/<id>.npy``), written atomically; ``index.csv`` and ``truncated.csv`` rows; what a re-run
finds finished. The layout: :mod:`videoattn.apps.extract`.
"""

from __future__ import annotations

import glob
import json
import os
from typing import List, Optional, Sequence

import numpy as np

from videoattn.config import FeaturesConfig
from videoattn.data.windows import Window
from videoattn.utils.io import atomic_path, atomic_write_text

SCORES_DIR = "scores"  # scores/<id>.npy: a subfolder, so no video id can collide with another's scores
INDEX_COLUMNS = [
    "video",
    "path",
    "num_windows",
    "fps",
    "duration_s",
    "window_s",
    "stride_s",
    "feature_shape",
    "dtype",
    "layer",
    "features",
    "windows",
    "weights",  # where the model's weights came from (empty in files written before this column)
]
TRUNCATED_COLUMNS = ["video", "path", "decoded_frames", "declared_frames", "decoded_s", "declared_s", "num_windows"]


def finished_meta(out_dir: str, vid: str, need_scores: bool = False) -> Optional[dict]:
    """The ``.json`` of a finished video ``vid`` (its ``.npy`` and ``.json`` both exist, and with
    ``need_scores`` its ``scores/<vid>.npy`` too), else None."""
    npy, meta = os.path.join(out_dir, vid + ".npy"), os.path.join(out_dir, vid + ".json")
    if not (os.path.isfile(npy) and os.path.isfile(meta)):
        return None
    try:
        with open(meta, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    if need_scores and not (found.get("scores") and os.path.isfile(os.path.join(out_dir, found["scores"]))):
        return None
    return found


def same_file(a: str, b: str) -> bool:
    """True if both paths reach one file."""
    return os.path.realpath(a) == os.path.realpath(b)


def remove_stale_temps(out_dir: str, vid: str) -> None:
    """Temp files a killed run left behind (``atomic_path`` names them ``.<name>.*.tmp``)."""
    for name in (vid + ".npy", vid + ".json", os.path.join(SCORES_DIR, vid + ".npy")):
        folder, base = os.path.split(os.path.join(out_dir, name))
        for tmp in glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(base) + ".*.tmp")):
            os.remove(tmp)


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def save_video(
    out_dir: str,
    vid: str,
    path: str,
    win: Window,
    declared: int,
    feats: np.ndarray,
    features: FeaturesConfig,
    scores: Optional[np.ndarray] = None,
    weights: str = "",
) -> dict:
    """Write ``scores/<vid>.npy`` (if any), ``<vid>.json``, then ``<vid>.npy`` (which marks it done);
    ``weights``: where the model's weights came from (a probe checks its backbone against it)."""
    meta = {
        "video": vid,
        "path": path,
        "fps": win.fps,
        "num_video_frames": win.num_frames,
        "duration_s": win.num_frames / win.fps,
        "declared_frames": declared,
        "declared_duration_s": declared / win.fps,
        "truncated": declared > win.num_frames,
        "window_s": win.window_s,
        "stride_s": win.stride_s,
        "num_windows": len(win.starts),
        "starts_s": win.starts,
        "ends_s": win.ends,
        "frame_indices": win.indices,
        "repeated_samples": win.repeated,
        "layer": features.layer,
        "dtype": features.dtype,
        "feature_shape": list(feats.shape),
        "weights": weights,
    }
    if scores is not None:
        save_npy(os.path.join(out_dir, SCORES_DIR, vid + ".npy"), scores)
        meta.update(
            scores=f"{SCORES_DIR}/{vid}.npy",
            scores_shape=list(scores.shape),
            scores_kind="softmax",
            classes="classes.txt",
        )
    atomic_write_text(os.path.join(out_dir, vid + ".json"), json.dumps(meta) + "\n")
    save_npy(os.path.join(out_dir, vid + ".npy"), feats)
    return meta


def index_row(meta: dict) -> list:
    """The ``index.csv`` row (:data:`INDEX_COLUMNS`) of a finished video's ``.json``."""
    return [
        meta["video"],
        meta["path"],
        meta["num_windows"],
        f"{meta['fps']:.6g}",
        f"{meta['duration_s']:.6f}",
        f"{meta['window_s']:.6f}",
        f"{meta['stride_s']:.6f}",
        "x".join(map(str, meta["feature_shape"])),
        meta["dtype"],
        meta["layer"],
        meta["video"] + ".npy",
        meta["video"] + ".json",
        meta.get("weights", ""),
    ]


def truncated_row(meta: dict) -> Optional[list]:
    """The ``truncated.csv`` row (:data:`TRUNCATED_COLUMNS`) of a video cut short, else None."""
    if not meta.get("truncated"):
        return None
    return [
        meta["video"],
        meta["path"],
        meta["num_video_frames"],
        meta["declared_frames"],
        f"{meta['duration_s']:.3f}",
        f"{meta['declared_duration_s']:.3f}",
        meta["num_windows"],
    ]


def output_names(ids: Sequence[str], save_scores: bool) -> List[str]:
    """Every file extraction may write into its folder (never one it did not create:
    :mod:`videoattn.utils.outputs`)."""
    names = ["index.csv", "truncated.csv", "failed.csv"] + [i + ext for i in ids for ext in (".npy", ".json")]
    return names + (["classes.txt"] + [os.path.join(SCORES_DIR, i + ".npy") for i in ids] if save_scores else [])
