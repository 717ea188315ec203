"""Input rows of ``tools/prepare_data.py``: read them, find their source files, plan the outputs.

Inputs (one or more ``--annotations``), each in one of the formats ``read_annotations`` reads:

* Kinetics CSV ``label,youtube_id,time_start,time_end,split[,...]`` (a UTF-8 BOM is ignored): each
  row is cut from the full-length ``<youtube_id>.<ext>`` or taken whole from an already-cut
  ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` found anywhere under ``--source``.
* PySlowFast list ``<path> <label index>``: the file named like ``<path>``'s base name under
  ``--source`` (or ``<id>.<ext>`` cut to the span the name encodes), kept whole otherwise.
* A folder per class ``<folder>/<class>/<video>``: every video, kept whole.

Outputs, under ``--output``: ``<split>/<label>/<stem>.mp4`` (``--layout per-label``, the default) or
``<split>/<stem>.mp4`` (``flat``); ``<stem>`` is ``<youtube_id>_<start:06d>_<end:06d>`` for a
Kinetics row, the source's stem otherwise; ``<split>`` is the row's ``split`` column, else the input's
name (``train.csv`` -> ``train``). Folder inputs always keep a folder per class.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from videoattn.data.annotations import VIDEO_EXTENSIONS, list_lines
from videoattn.datasets.prepare import BAD_ROW, DUPLICATE, MISSING, NOT_IN_CLASS, WRONG_EXTENSION
from videoattn.utils.errors import OneLineError
from videoattn.utils.walk import walk_files

CUT_NAME = re.compile(r"^(?P<id>.+)_(?P<start>\d{6})_(?P<end>\d{6})$")


class InputError(OneLineError, ValueError):
    """An input that stops the whole run (unreadable annotation file, unknown format...)."""


@dataclass
class Row:
    annotation: str  # the input file / folder
    line: int  # 1-based line (folders: 0)
    split: str
    label: str  # class name (lists: the label index as text)
    stem: str  # output file stem
    youtube_id: str = ""
    start: Optional[float] = None  # seconds (Kinetics CSV rows)
    end: Optional[float] = None
    source: str = ""  # a known source path (folder inputs)
    fields: List[str] = field(default_factory=list)  # the row as read (CSV) / [path, index] (list)

    @property
    def where(self) -> str:
        return f"{self.annotation}:{self.line}" if self.line else self.annotation


@dataclass
class Failure:
    path: str
    reason: str
    detail: str
    row: str


@dataclass
class Inputs:
    """Every row of every input, and what each input looked like (to write its clean copy)."""

    rows: List[Row] = field(default_factory=list)
    failures: List[Failure] = field(default_factory=list)
    formats: Dict[str, str] = field(default_factory=dict)  # annotation -> kinetics_csv | list | folders
    headers: Dict[str, List[str]] = field(default_factory=dict)  # CSV annotation -> header


# ------------------------------------------------------------------------------------------ sources
@dataclass
class SourceIndex:
    videos: Dict[str, List[str]]  # stem -> video files
    others: Dict[str, List[str]]  # name up to the first dot -> files without a video extension


def index_sources(root: str, exclude: Tuple[str, ...] = ()) -> SourceIndex:
    """Walk ``root`` once (:func:`~videoattn.utils.walk.walk_files`: follows symlinks, each folder
    once, so symlink cycles end); ``exclude`` folders (the output) are not entered; hidden files
    (``.name``: partial downloads, our own temporaries) are ignored."""
    videos: Dict[str, List[str]] = {}
    others: Dict[str, List[str]] = {}
    for path in walk_files(root, exclude):
        name = os.path.basename(path)
        if name.startswith("."):
            continue
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS:
            videos.setdefault(stem, []).append(path)
        else:
            others.setdefault(name.split(".")[0], []).append(path)
    return SourceIndex(videos, others)


def _stat(path: str):
    try:
        return os.stat(path)
    except OSError:
        return None


def _best(paths: List[str]) -> str:
    """Prefer a non-empty file, then the usual download formats, then the path order."""
    rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}

    def key(p: str):
        st = _stat(p)
        return (st is None or st.st_size == 0, rank.get(os.path.splitext(p)[1].lower(), 99), p)

    return sorted(paths, key=key)[0]


def find_source(index: SourceIndex, row: Row) -> Tuple[Optional[str], bool, Optional[Failure]]:
    """(source path, cut it?, failure): an already-cut file wins over a full-length one to cut."""
    if row.source:
        return row.source, False, None
    if row.stem in index.videos:
        return _best(index.videos[row.stem]), False, None
    if row.youtube_id and row.start is not None and row.youtube_id in index.videos:
        return _best(index.videos[row.youtube_id]), True, None
    names = [row.stem] + ([f"{row.youtube_id}"] if row.youtube_id else [])
    wrong = [p for n in names for p in index.others.get(n, [])]
    if wrong:
        return (
            None,
            False,
            Failure(
                wrong[0],
                WRONG_EXTENSION,
                "not a video file name (" + ", ".join(os.path.basename(p) for p in wrong[:3]) + ")",
                row.where,
            ),
        )
    expected = f"{row.stem}.*" + (f" or {row.youtube_id}.*" if row.youtube_id else "")
    return None, False, Failure(expected, MISSING, f"no {expected} under the source folder", row.where)


# --------------------------------------------------------------------------------------- read input
def _split_name(path: str) -> str:
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def _read_csv(path: str, text: str, inputs: Inputs) -> None:
    table = list(csv.reader(io.StringIO(text, newline="")))
    header = [c.strip().lower() for c in table[0]]
    if "label" not in header:
        raise InputError(f"{path}:1: Kinetics CSV without a 'label' column: {','.join(table[0])}")
    col = {name: header.index(name) for name in header}
    inputs.formats[path], inputs.headers[path] = "kinetics_csv", table[0]
    for lineno, fields in enumerate(table[1:], start=2):
        if not fields or all(not c.strip() for c in fields):
            continue
        where = f"{path}:{lineno}"
        if len(fields) != len(header):
            inputs.failures.append(Failure("", BAD_ROW, f"{len(fields)} columns, expected {len(header)}", where))
            continue
        label, yid = fields[col["label"]].strip(), fields[col["youtube_id"]].strip()
        try:
            start, end = float(fields[col["time_start"]]), float(fields[col["time_end"]])
        except ValueError:
            inputs.failures.append(Failure(yid, BAD_ROW, "time_start/time_end are not numbers", where))
            continue
        if not (math.isfinite(start) and math.isfinite(end)):
            inputs.failures.append(
                Failure(yid, BAD_ROW, f"time_start/time_end must be finite: {start:g}, {end:g}", where)
            )
            continue
        split = fields[col["split"]].strip() if "split" in col and fields[col["split"]].strip() else _split_name(path)
        stem = f"{yid}_{int(start):06d}_{int(end):06d}" if start >= 0 else yid
        inputs.rows.append(Row(path, lineno, split, label, stem, yid, start, end, fields=fields))


def _read_list(path: str, text: str, inputs: Inputs) -> None:
    inputs.formats[path] = "list"
    for lineno, line, row in list_lines(path, text):
        if row is None or not row[1].isdigit():
            inputs.failures.append(
                Failure("", BAD_ROW, f"expected '<path> <label index>': {line!r}", f"{path}:{lineno}")
            )
            continue
        rel, label = row
        ext = os.path.splitext(rel)[1]
        if ext and ext.lower() not in VIDEO_EXTENSIONS:  # not a video: never matched to a video of its stem
            inputs.failures.append(Failure(rel, WRONG_EXTENSION, f"{ext} is not a video extension", f"{path}:{lineno}"))
            continue
        stem = os.path.splitext(os.path.basename(rel))[0]
        m = CUT_NAME.match(stem)
        yid, start, end = (m["id"], float(m["start"]), float(m["end"])) if m else ("", None, None)
        inputs.rows.append(Row(path, lineno, _split_name(path), label, stem, yid, start, end, fields=[rel, label]))


def _is_video_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _outside_classes(path: str, inputs: Inputs) -> None:
    """Videos a folder-per-class input holds outside ``<class>/<video>`` (loose at the top, or in a
    sub-folder of a class folder) are listed in failed.csv, not silently left out."""
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if os.path.isfile(file) and _is_video_name(name):
            inputs.failures.append(
                Failure(
                    file,
                    NOT_IN_CLASS,
                    "a video directly in the input folder: move it into a class folder <folder>/<class>/",
                    path,
                )
            )
        elif os.path.isdir(file) and not name.startswith("."):
            for sub in sorted(d for d in os.listdir(file) if os.path.isdir(os.path.join(file, d))):
                for video in walk_files(os.path.join(file, sub)):
                    if _is_video_name(os.path.basename(video)):
                        inputs.failures.append(
                            Failure(
                                video,
                                NOT_IN_CLASS,
                                f"in the sub-folder {name}/{sub}: only <folder>/<class>/<video> is read; move it up",
                                path,
                            )
                        )


def _read_folders(path: str, inputs: Inputs) -> None:
    inputs.formats[path] = "folders"
    split = _split_name(path)
    _outside_classes(path, inputs)
    for label in sorted(os.listdir(path)):
        folder = os.path.join(path, label)
        if not os.path.isdir(folder) or label.startswith("."):
            continue
        for name in sorted(os.listdir(folder)):
            file = os.path.join(folder, name)
            if name.startswith(".") or not os.path.isfile(file):
                continue
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS:
                inputs.failures.append(
                    Failure(file, WRONG_EXTENSION, f"{ext or 'no extension'} is not a video extension", path)
                )
                continue
            inputs.rows.append(Row(path, 0, split, label, stem, source=file))


def read_inputs(paths: List[str]) -> Inputs:
    """Rows of every input; InputError (one line) for an input that cannot be read at all."""
    inputs = Inputs()
    for path in paths:
        if os.path.isdir(path):
            _read_folders(path, inputs)
            continue
        try:  # read once: the input may be a pipe (``<(...)``)
            with open(path, "r", encoding="utf-8-sig", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read the annotation file: {getattr(e, 'strerror', None) or e}") from None
        first = next(iter(text.splitlines()), "")
        header = [c.strip().lower() for c in next(csv.reader([first]), [])]
        if all(c in header for c in ("youtube_id", "time_start", "time_end")):
            _read_csv(path, text, inputs)
        else:
            _read_list(path, text, inputs)
    return inputs


# ------------------------------------------------------------------------------------------- plan
def resolve_classes(inputs: Inputs, classes: Optional[List[str]]) -> List[str]:
    """``classes`` if given; else the sorted labels (CSV, folders) or "0".."max index" (lists)."""
    if classes:
        return list(classes)
    kinds = set(inputs.formats.values())
    if "list" in kinds and len(kinds) > 1:
        raise InputError("PySlowFast lists (label indices) mixed with named labels: give --classes")
    if kinds == {"list"}:
        top = max((int(r.label) for r in inputs.rows), default=-1)
        return [str(i) for i in range(top + 1)]
    return sorted({r.label for r in inputs.rows if r.label})


def _row_problem(row: Row, fmt: str, known: set, count: int) -> Optional[str]:
    if row.start is not None and fmt == "kinetics_csv":
        if row.start < 0:
            return f"negative time_start {row.start:g}"
        if row.end <= row.start:
            return f"time_end {row.end:g} <= time_start {row.start:g}"
    if not row.stem or row.stem in (".", ".."):
        return "empty video name"
    if fmt == "list":
        return None if int(row.label) < count else f"label index {row.label} not below {count} classes"
    return None if row.label in known else f"label {row.label!r} is not in the class list"


def check_rows(inputs: Inputs, classes: List[str]) -> List[Row]:
    """The usable rows; bad rows and duplicates (same split and video name) go to ``failures``."""
    known, good, first = set(classes), [], {}
    for row in inputs.rows:
        problem = _row_problem(row, inputs.formats[row.annotation], known, len(classes))
        if problem:
            inputs.failures.append(Failure(row.stem, BAD_ROW, problem, row.where))
            continue
        key = (row.split, row.stem)
        if key in first:
            other = first[key]
            note = "" if other.label == row.label else f" with another label ({other.label!r})"
            inputs.failures.append(Failure(row.stem, DUPLICATE, f"same video as {other.where}{note}", row.where))
            continue
        first[key] = row
        good.append(row)
    return good


def safe_name(name: str) -> str:
    """``name`` usable as one path component (no separators, not '.'/'..', not empty)."""
    cleaned = name.replace(os.sep, "_").replace("\0", "_").replace("/", "_").strip()
    return "_" if cleaned in ("", ".", "..") else cleaned


def output_relpath(row: Row, fmt: str, classes: List[str], layout: str) -> str:
    """Where ``row``'s prepared video goes, relative to the output folder."""
    label = classes[int(row.label)] if fmt == "list" else row.label
    parts = [safe_name(row.split)] + ([safe_name(label)] if layout == "per-label" or fmt == "folders" else [])
    return "/".join(parts + [safe_name(row.stem) + ".mp4"])


def annotation_outputs(inputs: Inputs, out_dir: str, reserved: Tuple[str, ...] = ()) -> Dict[str, str]:
    """{input annotation: the clean copy to write} (folder inputs: none; the output tree is the copy);
    InputError for a copy that would take the name of one of the ``reserved`` reports."""
    targets: Dict[str, str] = {}
    for path, fmt in inputs.formats.items():
        if fmt == "folders":
            continue
        target = os.path.join(out_dir, os.path.basename(path))
        if os.path.basename(path) in reserved:
            raise InputError(
                f"{path}: its clean copy would be {target}, the name of a report prepare_data "
                f"writes ({', '.join(reserved)}); rename the annotation file"
            )
        if target in targets.values():
            raise InputError(f"{path}: another input has the same file name; its clean copy would overwrite it")
        if os.path.exists(target) and os.path.samefile(target, path):
            raise InputError(f"{path}: the clean copy would overwrite this input; choose another --output")
        targets[path] = target
    return targets


def clean_annotation_text(path: str, inputs: Inputs, good: Dict[int, str]) -> str:
    """The input ``path`` reduced to its good rows (``good``: id(row) -> output path relative to the
    output folder), in its own format."""
    rows = [r for r in inputs.rows if r.annotation == path and id(r) in good]
    buf = io.StringIO()
    if inputs.formats[path] == "kinetics_csv":
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(inputs.headers[path])
        writer.writerows(r.fields for r in rows)
    else:
        buf.writelines(f"{good[id(r)]} {r.label}\n" for r in rows)
    return buf.getvalue()


def refuse_overwrites(outputs: List[str], inputs: List[str]) -> None:
    """InputError (one line) if any of ``outputs`` already is one of the files ``inputs`` (a source
    video or an annotation file), however it is reached: the same path (a source inside the output
    folder, in the output's layout), a symlink or a hard link. Compared by (device, inode)."""
    keys = {}
    for path in inputs:
        st = _stat(path)
        if st is not None:
            keys.setdefault((st.st_dev, st.st_ino), path)
    for path in outputs:
        st = _stat(path)
        if st is not None and (st.st_dev, st.st_ino) in keys:
            raise InputError(
                f"{path} would replace the input {keys[(st.st_dev, st.st_ino)]} (the source lies "
                "inside --output in its layout, or is linked there); choose an --output outside the inputs"
            )
