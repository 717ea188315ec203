"""Read a split's annotations: Kinetics CSV, PySlowFast list, or a folder per class.

* Kinetics CSV (header ``label,youtube_id,time_start,time_end,split[,is_cc]``): each row names the
  file ``<youtube_id>_<time_start:06d>_<time_end:06d>.<any video extension>`` anywhere under
  ``data.root`` (flat ``train/``/``val/`` folders or a folder per label; the root is indexed once
  per process and cached).
* PySlowFast list: ``<path relative to data.root> <label index>`` per line, space or comma separated.
* A folder: ``<folder>/<class>/<video>``.

Classes: ``data.classes_file`` (one name per line, or ``kinetics400`` for the shipped Kinetics-400
list) if set; otherwise the sorted training labels
(Kinetics CSV), the training folder's sub-folders, or ``"0".."N-1"`` for lists.
Rows whose file is absent are collected in ``missing``; malformed lines raise
:class:`AnnotationError` with ``file:line`` and the offending text. Rows naming a video that an
earlier row already named are dropped (each video counts once; one warning with the count), and
two rows giving one video different labels are an error naming both lines. Files are read as
UTF-8 with or without a byte-order mark (spreadsheet programs write one).
"""
from __future__ import annotations

import csv
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from videoattn.utils.resources import kinetics400_classes
from videoattn.utils.walk import walk_files
from videoattn.utils.errors import InputNotFound, OneLineError

log = logging.getLogger(__name__)
ENCODING = "utf-8-sig"   # UTF-8, skipping a byte-order mark if there is one
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".3gp", ".mpg", ".mpeg", ".ogv", ".wmv")
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
KINETICS_REQUIRED = ("youtube_id", "time_start", "time_end")   # "label" too, where labels are needed


class AnnotationError(OneLineError, ValueError):
    """A malformed annotation file or line (message starts with ``file:line``)."""


@dataclass
class Annotations:
    videos: List[Tuple[str, int]]                       # (absolute path, label index)
    classes: List[str]
    missing: List[str] = field(default_factory=list)    # "file:line: <expected file> (<label>)"
    source: str = ""                                    # the annotation file / folder
    format: str = ""                                    # kinetics_csv | list | folders
    duplicates: List[str] = field(default_factory=list)  # "file:line: <video> (as line N)", rows dropped


def resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


# ------------------------------------------------------------------------------------- root index
_INDEX: Dict[str, Dict[str, List[str]]] = {}
_INDEX_LOCK = threading.Lock()


def index_root(root: str) -> Dict[str, List[str]]:
    """{file stem: [paths]} of every video file under ``root`` (walked once per process, cached)."""
    key = os.path.abspath(root)
    with _INDEX_LOCK:
        if key not in _INDEX:
            index: Dict[str, List[str]] = {}
            for path in walk_files(key):  # follows folder links, each folder once (no cycles)
                stem, ext = os.path.splitext(os.path.basename(path))
                if ext.lower() in VIDEO_EXTENSIONS:
                    index.setdefault(stem, []).append(path)
            _INDEX[key] = index
        return _INDEX[key]


def clear_index_cache() -> None:
    with _INDEX_LOCK:
        _INDEX.clear()


# ------------------------------------------------------------------------------------------ classes
def read_classes_file(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise InputNotFound(f"class list file not found: {path}")
    with open(path, "r", encoding=ENCODING) as f:
        names = [line.strip() for line in f]
    names = [n for n in names if n]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise AnnotationError(f"{path}: duplicate class names {dup}")
    if not names:
        raise AnnotationError(f"{path}: no class names")
    return names


SHIPPED_CLASS_LISTS = {"kinetics400": kinetics400_classes}  # data.classes_file names for the lists in the package


def load_classes(root: str, classes_file: str) -> List[str]:
    """The class list ``data.classes_file`` names: a shipped list (``kinetics400``: the 400
    Kinetics-400 names in label order) or a file, relative to ``root`` unless absolute."""
    if classes_file in SHIPPED_CLASS_LISTS:
        return SHIPPED_CLASS_LISTS[classes_file]()
    return read_classes_file(resolve(root, classes_file))


def _is_kinetics_csv(path: str) -> bool:
    """True for a Kinetics CSV header; AnnotationError (``file:1``) for a header that names some
    Kinetics columns but lacks others (rather than reading it as a PySlowFast list)."""
    with open(path, "r", encoding=ENCODING, newline="") as f:
        first = f.readline()
    header = [c.strip().lower() for c in next(csv.reader([first]), [])]
    missing = [c for c in KINETICS_REQUIRED if c not in header]
    if missing and len(missing) < len(KINETICS_REQUIRED):
        raise AnnotationError(f"{path}:1: Kinetics CSV header without column(s) {', '.join(missing)} "
                              f"(needs {','.join(KINETICS_COLUMNS)}[,split]): {first.strip()!r}")
    return not missing


def _kinetics_labels(path: str) -> List[str]:
    with open(path, "r", encoding=ENCODING, newline="") as f:
        return sorted({row["label"].strip() for row in csv.DictReader(f) if row.get("label")})


def default_classes(root: str, train_split: str) -> Optional[List[str]]:
    """Class names implied by the training split (None for a PySlowFast list)."""
    path = resolve(root, train_split)
    if os.path.isdir(path):
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if os.path.isfile(path) and _is_kinetics_csv(path):
        return _kinetics_labels(path)
    if os.path.isfile(path):  # PySlowFast list: "0".."max label"
        top = -1
        with open(path, "r", encoding=ENCODING) as f:
            for line in f:
                last = line.strip().replace(",", " ").split()[-1:]
                if last and last[0].lstrip("-").isdigit():
                    top = max(top, int(last[0]))
        return [str(i) for i in range(top + 1)] if top >= 0 else None
    return None


# ------------------------------------------------------------------------------------------ formats
def _unique(path: str, rows: List[Tuple[str, int, int]], classes: List[str]) -> Tuple[list, List[str]]:
    """``(videos, duplicates)`` from ``rows`` = [(video path, label, line)]: each video (by its real
    path) once, as its first row names it; a later row with another label is an AnnotationError."""
    first: Dict[str, Tuple[int, int]] = {}
    videos, duplicates = [], []
    for video, label, lineno in rows:
        key = os.path.realpath(video)
        if key not in first:
            first[key] = (label, lineno)
            videos.append((video, label))
            continue
        label0, line0 = first[key]
        if label != label0:
            name = (lambda i: repr(classes[i]) if 0 <= i < len(classes) else str(i))
            raise AnnotationError(f"{path}:{lineno}: {video} is labelled {name(label)} here but {name(label0)} "
                                  f"at {path}:{line0}")
        duplicates.append(f"{path}:{lineno}: {video} (as line {line0})")
    return videos, duplicates


def _read_kinetics_csv(path: str, root: str, classes: Optional[List[str]], split: str) -> Annotations:
    """``classes`` None: labels are not needed (feature extraction); every video gets label -1."""
    index = index_root(root)
    label_of = {n: i for i, n in enumerate(classes or [])}
    rows_out, missing = [], []
    with open(path, "r", encoding=ENCODING, newline="") as f:
        rows = list(csv.reader(f))
    header = [c.strip().lower() for c in rows[0]]
    col = {name: header.index(name) for name in header}
    if "label" not in col and classes is not None:
        raise AnnotationError(f"{path}:1: Kinetics CSV without a 'label' column cannot be used for {split}: {','.join(rows[0])}")
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        text = ",".join(row)
        if len(row) != len(header):
            raise AnnotationError(f"{path}:{lineno}: expected {len(header)} columns ({','.join(header)}), "
                                  f"got {len(row)}: {text!r}")
        label, yid = row[col["label"]].strip() if "label" in col else "", row[col["youtube_id"]].strip()
        try:
            start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
        except (ValueError, OverflowError):  # not a number, nan, inf
            raise AnnotationError(f"{path}:{lineno}: time_start/time_end must be numbers: {text!r}") from None
        if classes is not None and label not in label_of:
            raise AnnotationError(f"{path}:{lineno}: unknown label {label!r} (not in the class list): {text!r}")
        stem = f"{yid}_{start:06d}_{end:06d}"
        candidates = index.get(stem, [])
        if not candidates:
            missing.append(f"{path}:{lineno}: {stem}.* ({label})")
            continue
        # prefer a file in a folder named after the row's split or label
        parent = {os.path.basename(os.path.dirname(c)): c for c in candidates}
        row_split = row[col["split"]].strip() if "split" in col else split
        chosen = parent.get(row_split) or parent.get(label) or candidates[0]
        rows_out.append((chosen, label_of.get(label, -1), lineno))
    videos, duplicates = _unique(path, rows_out, classes or [])
    return Annotations(videos, classes or [], missing, path, "kinetics_csv", duplicates)


def list_lines(path: str, text: Optional[str] = None) -> Iterator[Tuple[int, str, Optional[Tuple[str, str]]]]:
    """``(line number, line, (path, label) or None if malformed)`` of each non-empty line of a
    PySlowFast list (``<path> <label>``, space or comma separated; the path may hold spaces).
    ``text``: the file's text, already read. Lines end at ``\n``, ``\r\n`` or ``\r`` only (as an
    editor numbers them; ``str.splitlines`` would also split at form feeds and the like)."""
    if text is None:
        with open(path, "r", encoding=ENCODING, newline="") as f:
            text = f.read()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        parts = [p.strip() for p in (text.rsplit(",", 1) if "," in text else text.rsplit(None, 1))]
        yield lineno, line, (parts[0], parts[1]) if len(parts) == 2 and parts[0] and parts[1] else None


def _read_list(path: str, root: str, classes: Optional[List[str]], labels: bool = True) -> Annotations:
    """``labels`` False: the label column is not checked (feature extraction)."""
    entries, missing = [], []
    for lineno, line, row in list_lines(path):
        if row is None:
            raise AnnotationError(f"{path}:{lineno}: expected '<path> <label index>': {line!r}")
        rel, label = row
        try:
            index = int(label) if labels else -1
        except ValueError:
            raise AnnotationError(f"{path}:{lineno}: label index {label!r} is not an integer: {line!r}") from None
        if labels and (index < 0 or (classes is not None and index >= len(classes))):
            bound = f"[0, {len(classes) - 1}]" if classes is not None else ">= 0"
            raise AnnotationError(f"{path}:{lineno}: label index {index} out of range {bound}: {line!r}")
        full = resolve(root, rel)
        if os.path.isfile(full):
            entries.append((full, index, lineno))
        else:
            missing.append(f"{path}:{lineno}: {rel} ({index})")
    if classes is None:
        top = max([i for _, i, _ in entries], default=-1)
        classes = [str(i) for i in range(top + 1)]
    videos, duplicates = _unique(path, entries, classes)
    return Annotations(videos, classes, missing, path, "list", duplicates)


def _read_folders(path: str, classes: List[str]) -> Annotations:
    label_of = {n: i for i, n in enumerate(classes)}
    videos = []
    for name in sorted(os.listdir(path)):
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            continue
        if name not in label_of:
            raise AnnotationError(f"{folder}: folder {name!r} is not a class of the class list")
        for file in sorted(os.listdir(folder)):
            if os.path.splitext(file)[1].lower() in VIDEO_EXTENSIONS:
                videos.append((os.path.join(folder, file), label_of[name]))
    return Annotations(videos, classes, [], path, "folders")


def read_annotations(root: str, split_file: str, train_split: str, classes_file: str = "",
                     split: str = "train", labels: bool = True) -> Annotations:
    """Read one split.

    Args:
        root: ``data.root``; relative paths resolve against it.
        split_file: this split's annotation file or folder.
        train_split: the training split (defines the classes when no ``classes_file``).
        classes_file: ``data.classes_file`` ("" = derive from the training split; ``kinetics400``:
            the shipped list).
        labels: False when only the videos matter (feature extraction): no class list is read,
            labels are not checked and every video gets label -1.
    """
    path = resolve(root, split_file)
    if not os.path.exists(path):
        raise InputNotFound(f"annotation file or folder not found: {path}")
    classes = None
    if labels:
        classes = load_classes(root, classes_file) if classes_file else default_classes(root, train_split)
    if os.path.isdir(path):
        if classes is None:
            classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        ann = _read_folders(path, classes)
    elif _is_kinetics_csv(path):
        if classes is None and labels:
            raise AnnotationError(f"{path}: Kinetics CSV needs data.classes_file or a Kinetics CSV training split")
        ann = _read_kinetics_csv(path, root, classes, split)
    else:
        ann = _read_list(path, root, classes, labels)
    if ann.duplicates:
        shown = "; ".join(ann.duplicates[:3]) + (" ..." if len(ann.duplicates) > 3 else "")
        log.warning("%s: %d duplicate rows ignored (each video counts once): %s", path, len(ann.duplicates), shown)
    return ann
