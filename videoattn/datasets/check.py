"""Check every video of a split the way training reads it (``tools/check_data.py``); deletes nothing.

Each video is opened with :func:`~videoattn.data.decoding.open_video` (the configured backend,
decode threads and timeout) and its first, middle and last clip (``data.protocol``'s clip starting
at frame 0, half way and at the last possible start: the extremes of training's random clip and of
multi-view testing) are decoded, in worker processes under a per-video time limit (a hung file is
killed, not waited for).

Writes to the output folder:

* ``check_<split>.csv``: ``path,label,status,reason,backend,frames,declared_frames,fps,width,height,
  decode_ms_per_clip,warnings`` (status ``ok`` | ``broken`` | ``missing``);
* ``check_<split>_summary.txt`` (also printed): counts, warnings, decode time per clip;
* the clean annotation file ``<annotation name>_clean.<ext>``: the split's rows whose video is ok,
  in the input's format (Kinetics CSV or PySlowFast list; a folder per class becomes a list).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional

import numpy as np

from videoattn.config import DataConfig
from videoattn.data.annotations import Annotations, read_annotations, resolve
from videoattn.data.decoding import DecodeError, config_backend, open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.utils.errors import UsageError
from videoattn.utils.io import atomic_write_text, make_folder
from videoattn.utils.outputs import check_not_input, claim_outputs
from videoattn.utils.workers import OK as POOL_OK
from videoattn.utils.workers import run_tasks

CLIPS = 3  # first, middle, last
COLUMNS = [
    "path",
    "label",
    "status",
    "reason",
    "backend",
    "frames",
    "declared_frames",
    "fps",
    "width",
    "height",
    "decode_ms_per_clip",
    "warnings",
]


@dataclass
class CheckSettings:
    """What the check needs from the config (see :func:`settings_from_config`)."""

    root: str
    split: str
    split_file: str
    train_split: str
    classes_file: str = ""
    num_frames: int = 8
    sampling_rate: int = 8
    target_fps: float = 30.0
    decode_threads: int = 1
    decode_timeout: Optional[float] = 30.0
    backend: str = "auto"
    protocol: str = "pyslowfast"


def settings_from_config(data: DataConfig, split: str) -> CheckSettings:
    """What the check of ``split`` needs from ``cfg.data`` (a plain, picklable record for the workers)."""
    split_file = {"train": data.train_split, "val": data.val_split, "test": data.test_split or data.val_split}[split]
    return CheckSettings(
        root=data.root,
        split=split,
        split_file=split_file,
        train_split=data.train_split,
        classes_file=data.classes_file,
        num_frames=data.num_frames,
        sampling_rate=data.sampling_rate,
        target_fps=data.target_fps,
        decode_threads=data.decode_threads,
        decode_timeout=data.decode_timeout or None,
        backend=config_backend(data),
        protocol=data.protocol,
    )


@dataclass
class VideoCheck:
    path: str
    label: int
    status: str = "ok"
    reason: str = ""
    backend: str = ""
    frames: int = 0
    declared_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    decode_ms_per_clip: float = 0.0
    warnings: List[str] = field(default_factory=list)


def check_video(task: tuple) -> VideoCheck:
    """Open ``path`` and decode its first / middle / last clip as training does. task: (path, label, settings)."""
    path, label, s = task
    result = VideoCheck(path, label)
    try:
        started = time.perf_counter()
        video = open_video(path, s.decode_threads, s.decode_timeout, s.backend)
        try:
            for idx in _clips(video.num_frames, video.fps, s):
                frames = video.get_frames(idx)
            result.decode_ms_per_clip = (time.perf_counter() - started) * 1e3 / CLIPS
            result.backend, result.frames, result.fps = video.backend, video.num_frames, round(video.fps, 3)
            result.declared_frames = video.declared_frames  # the header's claim: more = a file cut short
            result.height, result.width = int(frames.shape[1]), int(frames.shape[2])
        finally:
            video.close()
    except DecodeError as e:
        result.status, result.reason = "broken", e.reason
        return result
    if s.backend == "auto" and result.backend != "decord":
        result.warnings.append("decord failed, read by the PyAV fallback (slow)")
    if result.declared_frames != result.frames:
        result.warnings.append(
            f"header declares {result.declared_frames} frames, {result.frames} indexed "
            "(cut short? training reads only the indexed ones)"
        )
    span = _span(result.fps, s)
    if result.frames < span:
        past = "wrapped around" if s.protocol == "mmaction2" else "last frame repeated"
        result.warnings.append(f"shorter than one clip ({result.frames} < {span} frames): {past}")
    return result


def _span(fps: float, s: CheckSettings) -> int:
    """Frames one clip covers in a video of ``fps`` (its first to its last sampled frame)."""
    return (
        int(Protocol(s.protocol).window_indices(0, fps, ClipSpec(s.num_frames, s.sampling_rate, s.target_fps))[-1]) + 1
    )


def _clips(num_frames: int, fps: float, s: CheckSettings) -> List[List[int]]:
    """The :data:`CLIPS` clips checked: the protocol's clips starting at frame 0, half way and at the
    last start that fits (each ``(num_frames,)`` frame indices, fitted to the video)."""
    protocol, spec = Protocol(s.protocol), ClipSpec(s.num_frames, s.sampling_rate, s.target_fps)
    last = max(0, num_frames - _span(fps, s))
    starts = np.linspace(0, last, CLIPS).round().astype(int)
    return [protocol.fit(protocol.window_indices(int(a), fps, spec), num_frames).tolist() for a in starts]


# ------------------------------------------------------------------------------------------ reports
def _report_csv(checks: List[VideoCheck]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in checks:
        row = asdict(c)
        row["warnings"] = "; ".join(c.warnings)
        row["decode_ms_per_clip"] = f"{c.decode_ms_per_clip:.1f}"
        writer.writerow([row[k] for k in COLUMNS])
    return buf.getvalue()


def summary(checks: List[VideoCheck], ann: Annotations, s: CheckSettings, wall: float) -> str:
    status = Counter(c.status for c in checks)
    ok = [c for c in checks if c.status == "ok"]
    lines = [
        f"{s.split}: {len(checks)} annotated videos in {ann.source}: {status['ok']} ok, "
        f"{status['broken']} broken, {status['missing']} missing ({wall:.1f} s)"
    ]
    warnings = Counter(w.split(" (")[0].split(":")[0] for c in ok for w in c.warnings)
    lines += [f"  warning: {w}: {n} videos" for w, n in warnings.most_common()]
    if ok:
        ms = np.array([c.decode_ms_per_clip for c in ok])
        lines.append(
            f"  decode per {s.num_frames}x{s.sampling_rate} clip (open included): mean {ms.mean():.1f} ms, "
            f"median {np.median(ms):.1f}, p95 {np.percentile(ms, 95):.1f}, max {ms.max():.1f}"
        )
        slow = sorted(ok, key=lambda c: -c.decode_ms_per_clip)[:3]
        lines += [f"  slowest: {c.path} ({c.decode_ms_per_clip:.0f} ms, {c.width}x{c.height})" for c in slow]
    reasons = Counter(c.reason.split(":")[0] for c in checks if c.status == "broken")
    lines += [f"  broken: {r}: {n}" for r, n in reasons.most_common()]
    return "\n".join(lines)


def clean_name(ann: Annotations) -> str:
    """The file name of the split's clean annotation: ``<annotation stem>_clean<ext>`` (``.txt`` for a folder)."""
    stem, ext = os.path.splitext(os.path.basename(os.path.normpath(ann.source)))
    return f"{stem}_clean{ext}" if ann.format in ("kinetics_csv", "list") else f"{stem}_clean.txt"


def output_names(ann: Annotations, split: str) -> List[str]:
    """What :func:`run_check` writes into its output folder."""
    return [f"check_{split}.csv", f"check_{split}_summary.txt", clean_name(ann)]


def claim_check_outputs(s: CheckSettings, ann: Annotations, output_dir: str) -> None:
    """Refuse (:class:`videoattn.utils.outputs.OutputError`, one line) before any video is checked
    an output that is an input of the check (the annotation, the train split or the class list,
    also through a link) or a file check_data did not write; else list the outputs as check_data's."""
    names = output_names(ann, s.split)
    inputs = [ann.source] + [resolve(s.root, f) for f in (s.split_file, s.train_split, s.classes_file) if f]
    for name in names:
        check_not_input(os.path.join(output_dir, name), inputs)
    make_folder(output_dir)
    claim_outputs(output_dir, "check_data", names, hint="use another --output")


def clean_annotation(ann: Annotations, good: set, root: str) -> tuple:
    """(file name, text) of the split's annotation with only the rows whose video is in ``good``."""
    name = clean_name(ann)
    if ann.format == "kinetics_csv":
        with open(ann.source, "r", encoding="utf-8-sig", newline="") as f:
            table = list(csv.reader(f))
        header = [c.strip().lower() for c in table[0]]
        yid, start, end = (header.index(k) for k in ("youtube_id", "time_start", "time_end"))
        stems = {os.path.splitext(os.path.basename(p))[0] for p in good}

        def keep(row: list) -> bool:
            try:
                return f"{row[yid].strip()}_{int(float(row[start])):06d}_{int(float(row[end])):06d}" in stems
            except (ValueError, IndexError):
                return False

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([table[0]] + [r for r in table[1:] if r and keep(r)])
        return name, buf.getvalue()
    if ann.format == "list":
        with open(ann.source, "r", encoding="utf-8-sig") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]

        def path_of(line: str) -> str:
            return resolve(root, (line.rsplit(",", 1) if "," in line else line.rsplit(None, 1))[0].strip())

        return name, "".join(line + "\n" for line in lines if path_of(line) in good)
    label_of = dict(ann.videos)
    return name, "".join(f"{os.path.relpath(p, root)} {label_of[p]}\n" for p, _ in ann.videos if p in good)


def run_check(
    s: CheckSettings,
    output_dir: str,
    workers: int = 1,
    time_limit: float = 300.0,
    progress: bool = True,
    echo: Callable = print,
) -> int:
    """Check the split; write the report, summary and clean annotation. Exit code: 0 all ok, 1 some
    broken or missing (listed). ValueError (AnnotationError) for a split that cannot be read or
    lists no videos."""
    from tqdm import tqdm

    started = time.perf_counter()
    ann = read_annotations(s.root, s.split_file, s.train_split, s.classes_file, s.split)
    # ann.missing: "file:line: <expected name> (<label>)"
    missing = [VideoCheck(m.rsplit(": ", 1)[-1], -1, "missing", f"no video file for {m}") for m in ann.missing]
    if not ann.videos and not missing:
        raise UsageError(f"{s.split}: {ann.source} lists no videos")
    claim_check_outputs(s, ann, output_dir)
    tasks = [(path, label, s) for path, label in ann.videos]
    checks: List[Optional[VideoCheck]] = [None] * len(tasks)
    bar = tqdm(total=len(tasks), unit="video", desc=f"check {s.split}", disable=not progress, dynamic_ncols=True)
    for i, status, value in run_tasks(check_video, tasks, workers, time_limit) if tasks else []:
        checks[i] = value if status == POOL_OK else VideoCheck(tasks[i][0], tasks[i][1], "broken", f"{status}: {value}")
        bar.update(1)
    bar.close()
    done = [c for c in checks if c is not None] + missing
    text = summary(done, ann, s, time.perf_counter() - started)
    good = {c.path for c in done if c.status == "ok"}
    name, clean = clean_annotation(ann, good, s.root)
    atomic_write_text(os.path.join(output_dir, f"check_{s.split}.csv"), _report_csv(done))
    atomic_write_text(os.path.join(output_dir, f"check_{s.split}_summary.txt"), text + "\n")
    atomic_write_text(os.path.join(output_dir, name), clean)
    echo(text)
    echo(
        f"wrote {os.path.join(output_dir, f'check_{s.split}.csv')}, the summary and the clean annotation "
        f"{os.path.join(output_dir, name)} ({len(good)} rows)"
    )
    return 0 if len(good) == len(done) else 1
