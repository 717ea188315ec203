"""What a linear probe trains on: extract_features' window features matched to annotation rows.

``tools/extract_features.py`` writes, per video, ``DIR/<id>.npy`` with ``(num_windows, D)`` (or
``(num_windows, crops, D)`` without crop averaging) features and ``DIR/index.csv`` with one row per
finished video (its ``path``, ``layer``, ``feature_shape``, file names; see
:mod:`videoattn.apps.extract`). An annotation split (Kinetics CSV, PySlowFast list or a folder per
class, read as training reads it, against ``data.root``) names videos; each is matched to its
features by the real path of the video, else by its file name where only one indexed video has it
(a data folder moved since extraction). A row without features is one line naming it (or, with
``allow_missing``, left out and counted); NaN or inf features are refused.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from videoattn.config import DataConfig
from videoattn.data.annotations import default_classes, load_classes, read_annotations
from videoattn.utils.errors import InputNotFound, UsageError


@dataclass
class FeatureIndex:
    """``DIR/index.csv`` of an extract_features output."""

    folders: List[str]
    rows: List[Dict[str, str]]
    by_path: Dict[str, Dict[str, str]]  # real path of the video -> its row
    by_name: Dict[str, Optional[Dict[str, str]]]  # file name -> its row (None: several videos share it)
    layer: str


@dataclass
class ProbeSplit:
    """One split's videos with their features.

    ``windows[i]``: ``(W_i, D)`` float64 window features of video i (crops averaged);
    ``labels``: ``(N,)`` int64; ``left_out``: annotation rows without features (``allow_missing``).
    """

    name: str
    paths: List[str]
    labels: np.ndarray
    windows: List[np.ndarray]
    left_out: List[str] = field(default_factory=list)
    weights: List[str] = field(default_factory=list)  # the weights each video's features came from ("": unknown)

    def videos(self) -> np.ndarray:
        """``(N, D)``: each video's windows averaged (the per-video sample)."""
        return np.stack([w.mean(axis=0) for w in self.windows])

    def clips(self) -> "ClipSamples":
        """Every window a sample, with the video it comes from."""
        counts = [len(w) for w in self.windows]
        return ClipSamples(
            np.concatenate(self.windows),
            np.repeat(self.labels, counts),
            np.repeat(np.arange(len(self.windows)), counts),
        )


@dataclass
class ClipSamples:
    """``x: (M, D)`` window features, ``labels: (M,)``, ``video: (M,)`` index of each window's video."""

    x: np.ndarray
    labels: np.ndarray
    video: np.ndarray


def read_feature_index(folders: Sequence[str]) -> FeatureIndex:
    """The merged index of extract_features output folders (each row gains ``folder``); one line
    if a folder has none, or the folders hold features of different layers."""
    rows: List[Dict[str, str]] = []
    for folder in folders:
        path = os.path.join(folder, "index.csv")
        if not os.path.isfile(path):
            raise InputNotFound(f"--features {folder}: no index.csv (not a finished tools/extract_features.py output)")
        with open(path, newline="", encoding="utf-8") as f:
            found = [dict(r, folder=folder) for r in csv.DictReader(f)]
        if not found:
            raise UsageError(f"{path}: no videos (extract_features finished none)")
        rows += found
    layers = sorted({r["layer"] for r in rows})
    if len(layers) > 1:
        raise UsageError(f"--features {' '.join(folders)}: features of several layers {layers}; a probe needs one")
    by_name: Dict[str, Optional[Dict[str, str]]] = {}
    for r in rows:
        name = os.path.basename(r["path"])
        prev = by_name.get(name, r)  # a name shared by two different videos matches neither
        by_name[name] = r if prev is not None and prev["path"] == r["path"] else None
    return FeatureIndex(list(folders), rows, {os.path.realpath(r["path"]): r for r in rows}, by_name, layers[0])


def probe_classes(data: DataConfig, train_annotations: str) -> List[str]:
    """``data.classes_file`` if set, else the classes the training annotations imply."""
    if data.classes_file:
        return load_classes(data.root, data.classes_file)
    names = default_classes(data.root, train_annotations)
    if not names:
        raise UsageError(f"{train_annotations}: no class names; set data.classes_file")
    return names


def _window_features(index: FeatureIndex, row: Dict[str, str]) -> np.ndarray:
    """``(W, D)`` float64 window features of one index row (crops averaged); NaN/inf refused."""
    path = os.path.join(row["folder"], row["features"])
    try:
        feats = np.load(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: unreadable features ({e})") from None
    if feats.ndim not in (2, 3) or feats.shape[0] == 0:
        raise UsageError(f"{path}: features of shape {feats.shape}; expected (windows, D) or (windows, crops, D)")
    feats = feats.astype(np.float64)
    feats = feats.mean(axis=1) if feats.ndim == 3 else feats
    if not np.isfinite(feats).all():
        raise UsageError(f"{path}: NaN or inf features ({row['path']}); re-extract that video")
    return feats


def load_split(
    name: str, annotations: str, train_annotations: str, data: DataConfig, index: FeatureIndex, allow_missing: bool
) -> ProbeSplit:
    """The videos of ``annotations`` with their features from ``index``, labelled by the classes of
    :func:`probe_classes` (a label outside them is an AnnotationError naming its line)."""
    ann = read_annotations(data.root, annotations, train_annotations, data.classes_file, name)
    missing = [f"{m} (no video file)" for m in ann.missing]
    paths, labels, windows, weights = [], [], [], []
    for path, label in ann.videos:
        row = index.by_path.get(os.path.realpath(path)) or index.by_name.get(os.path.basename(path))
        if row is None:
            missing.append(f"{path} (no features in {' '.join(index.folders)})")
            continue
        paths.append(path)
        labels.append(label)
        windows.append(_window_features(index, row))
        weights.append(row.get("weights") or "")
    if missing and not allow_missing:
        raise UsageError(
            f"--{name}-annotations {annotations}: {len(missing)} of {len(ann.videos) + len(ann.missing)} rows "
            f"have no features, first: {missing[0]}; extract them, or pass --allow-missing to leave them out"
        )
    if not paths:
        raise UsageError(f"--{name}-annotations {annotations}: no video with features")
    dims = sorted({w.shape[1] for w in windows})
    if len(dims) > 1:
        raise UsageError(f"--features {' '.join(index.folders)}: features of different sizes {dims}")
    return ProbeSplit(name, paths, np.asarray(labels, dtype=np.int64), windows, missing, weights)
