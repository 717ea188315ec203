"""The videos a tool is given, and one output name per video (extract_features, predict).

``--input`` is a video file, a folder (recursive) or a list file; :func:`video_ids` names each
video's outputs so that every rank and every re-run of the same input agree.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from typing import List, Sequence, Tuple

from videoattn.config import DataConfig
from videoattn.data.annotations import ENCODING, VIDEO_EXTENSIONS, read_annotations
from videoattn.utils.errors import InputNotFound, UsageError
from videoattn.utils.walk import walk_files

log = logging.getLogger(__name__)


def video_ids(paths: Sequence[str]) -> List[str]:
    """One output name per input path, unique; a function of the whole list only, so every rank
    and every re-run of the same input agree.

    The file stem; where stems collide, the path below the inputs' common folder with separators
    turned into ``__``; where those collide too (``x.mp4`` next to ``x.avi``), with the extension
    (``x_avi``); where even that collides, with 8 hex digits of the SHA-1 of the absolute path.
    """
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath(absolute) if len(paths) > 1 else ""

    def below(p: str) -> str:
        return os.path.relpath(p, common) if common and p != common else os.path.basename(p)

    levels = [
        lambda p: os.path.splitext(os.path.basename(p))[0],
        lambda p: os.path.splitext(below(p))[0].replace(os.sep, "__"),
        lambda p: below(p).replace(os.sep, "__").replace(".", "_"),
        lambda p: below(p).replace(os.sep, "__").replace(".", "_") + "-" + hashlib.sha1(p.encode()).hexdigest()[:8],
    ]
    ids = [levels[0](p) for p in absolute]
    for level in levels[1:]:
        counts = Counter(ids)
        if len(counts) == len(ids):
            break
        ids = [level(p) if counts[i] > 1 else i for p, i in zip(absolute, ids)]
    if len(set(ids)) != len(ids):
        dup = [p for p, i in zip(paths, ids) if ids.count(i) > 1]
        raise UsageError(f"inputs name the same file more than once: {dup[:4]}")
    return ids


def _unique_paths(paths: Sequence[str]) -> List[str]:
    """``paths`` without repeats of one file (by real path), keeping the first; warns with the count."""
    seen, out = set(), []
    for p in paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    if len(out) < len(paths):
        log.warning(
            "features: %d inputs name a video listed before; each video is extracted once", len(paths) - len(out)
        )
    return out


def list_inputs(data: DataConfig, source: str) -> Tuple[List[str], List[str]]:
    """``(video paths, missing paths)`` from a video file, a folder (recursive) or a list file.

    A list file is either one video path per line, or anything the dataset reads for a split
    (Kinetics CSV, PySlowFast list), resolved against ``data.root`` as in training; labels are
    not read (no class list is needed). Each video is listed once.
    """
    if os.path.isdir(source):
        found = [p for p in walk_files(source) if p.lower().endswith(VIDEO_EXTENSIONS)]
        return _unique_paths(sorted(found)), []
    if source.lower().endswith(VIDEO_EXTENSIONS):
        return ([source], []) if os.path.isfile(source) else ([], [source])
    if not os.path.isfile(source):
        raise InputNotFound(f"--input {source}: no such video, folder or list file")
    with open(source, encoding=ENCODING) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    if lines and all(ln.lower().endswith(VIDEO_EXTENSIONS) for ln in lines):
        base = os.path.dirname(os.path.abspath(source))
        paths = [ln if os.path.isabs(ln) or os.path.exists(ln) else os.path.join(base, ln) for ln in lines]
        return _unique_paths([p for p in paths if os.path.isfile(p)]), [p for p in paths if not os.path.isfile(p)]
    ann = read_annotations(
        data.root, os.path.abspath(source), data.train_split, data.classes_file, "test", labels=False
    )
    return [v[0] for v in ann.videos], list(ann.missing)
