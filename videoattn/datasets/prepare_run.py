"""The ``tools/prepare_data.py`` run: rows -> jobs -> worker processes -> verified outputs + reports.

Restarts: every verified output is recorded in the folder's manifest right after the worker has
renamed it into place, and every output is claimed there before its job runs
(:mod:`videoattn.datasets.prepare_manifest`): a rerun skips what is still verified and redoes the
rest; a file the manifest never named is not ours and is left alone. Temporary files of killed
workers (``.<name>.mp4.*.tmp``) are swept from the jobs' folders before and after the jobs run. A
run holds ``<output>/.prepare.lock`` (``flock``: released by the kernel even after ``kill -9``), so
two runs never write one folder.

Written at the end (atomically): the clean annotation files (``<output>/<input name>``, good rows
only, same format), ``classes.txt``, ``failed.csv`` (``path,reason,detail,row``; this run's
failures) and a summary on stdout.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import math
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from videoattn.data.annotations import load_classes
from videoattn.datasets.prepare import (
    CRASHED,
    TIME_LIMIT,
    UNREADABLE,
    PrepareJob,
    PrepareResult,
    prepare_video,
)
from videoattn.datasets.prepare_manifest import (
    MANIFEST,
    Planned,
    append_entry,
    claim,
    entry_of,
    is_verified,
    keep_foreign_files,
    load_manifest,
    remove_temporaries,
    sweep_temporaries,
)
from videoattn.datasets.prepare_rows import (
    Failure,
    InputError,
    Inputs,
    Row,
    annotation_outputs,
    check_rows,
    clean_annotation_text,
    find_source,
    index_sources,
    output_relpath,
    read_inputs,
    refuse_overwrites,
    resolve_classes,
)
from videoattn.utils.io import atomic_write_text
from videoattn.utils.workers import CRASHED as POOL_CRASHED
from videoattn.utils.workers import OK as POOL_OK
from videoattn.utils.workers import TIME_LIMIT as POOL_TIME_LIMIT
from videoattn.utils.workers import run_tasks, usable_cores

LOCK = ".prepare.lock"
REPORTS = ("classes.txt", "failed.csv", MANIFEST, LOCK)  # written by the run: no clean copy may take these names
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_GOP = 32  # measured: decode cost flat for 16..32, +10% at 64; 32 is the smallest file there (docs/)


@dataclass
class PrepareOptions:
    annotations: List[str]
    source: str
    output: str
    short_side: int = 320
    gop: int = DEFAULT_GOP
    crf: int = 23
    preset: str = "veryfast"
    layout: str = "per-label"  # per-label | flat
    classes: str = ""  # a class-list file, "kinetics400", or "" (the rows' labels)
    workers: int = 1
    time_limit: float = 300.0  # seconds per video
    progress: bool = True
    cabac: bool = False  # True: x264's default CABAC (smaller files, slower decoding)
    b_pyramid: bool = False  # True: x264's referenced B-frames (the format before 2026-12-07; benchmarks only)


@dataclass
class RunState:
    good: Dict[int, str] = field(default_factory=dict)  # id(row) -> output relative path
    new: int = 0
    skipped: int = 0
    seconds: float = 0.0  # worker time of the new outputs
    stopped: str = ""  # why the run stopped early
    rotated: int = 0  # new outputs turned upright (display rotation)
    workers: int = 0  # worker processes used


@contextlib.contextmanager
def _ctrl_c_after():
    """Ctrl-C (SIGINT) during the block is raised when it ends. A Python-level handler, not a signal
    mask: CPython runs handlers in the main thread whichever thread the OS delivered to. Off the main
    thread (a library caller's worker thread) no handler can be set, and none is needed there: Ctrl-C
    is raised in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit = []
    old = signal.signal(signal.SIGINT, lambda *args: hit.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if hit and callable(old):  # Python's default raises KeyboardInterrupt; SIG_IGN stays ignored
            old(*hit[0])
        elif hit and old == signal.SIG_DFL:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------- setup
def _check_options(opts: PrepareOptions) -> None:
    if opts.short_side < 16 or opts.short_side % 2:
        raise InputError(f"--short-side must be an even number >= 16, got {opts.short_side}")
    if opts.gop < 1:
        raise InputError(f"--gop must be >= 1, got {opts.gop}")
    if opts.preset not in X264_PRESETS:
        raise InputError(f"--preset must be one of {', '.join(X264_PRESETS)}, got {opts.preset!r}")
    if not 0 <= opts.crf <= 51:
        raise InputError(f"--crf must be in [0, 51], got {opts.crf}")
    if opts.workers < 1:
        raise InputError(f"--workers must be >= 1, got {opts.workers}")
    if not (math.isfinite(opts.time_limit) and opts.time_limit > 0):
        raise InputError(f"--time-limit must be a positive number of seconds, got {opts.time_limit:g}")
    if opts.layout not in ("per-label", "flat"):
        raise InputError(f"--layout must be per-label or flat, got {opts.layout!r}")
    for path in opts.annotations:
        if not os.path.exists(path):
            raise InputError(f"annotation file or folder not found: {path}")
    real = [os.path.realpath(p) for p in opts.annotations]
    if len(set(real)) != len(real):
        raise InputError(f"an annotation input is given twice: {sorted({p for p in real if real.count(p) > 1})[0]}")
    if opts.source and not os.path.isdir(opts.source):
        raise InputError(f"--source is not a folder: {opts.source}")
    for folder in [opts.source] + [a for a in opts.annotations if os.path.isdir(a)]:
        if folder and os.path.isdir(opts.output) and os.path.samefile(folder, opts.output):
            raise InputError(
                f"--output {opts.output} is the input folder {folder}: the prepared videos would replace "
                "the source videos; choose another --output"
            )


def _load_classes(spec: str) -> Optional[List[str]]:
    if not spec:
        return None
    try:
        return load_classes(os.getcwd(), spec)  # a file, or "kinetics400" (the shipped list)
    except (OSError, ValueError) as e:
        raise InputError(f"--classes {spec}: {getattr(e, 'strerror', None) or e}") from None


@contextlib.contextmanager
def output_lock(out_dir: str):
    """Create ``out_dir`` and hold its lock; InputError (one line) if unusable or taken."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        handle = open(os.path.join(out_dir, LOCK), "a+")
    except OSError as e:
        raise InputError(f"output folder {out_dir} is not writable: {e.strerror or e}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise InputError(f"output folder {out_dir} is in use by another prepare_data run") from None
    try:
        yield
    finally:
        handle.close()


def plan_jobs(rows: List[Row], inputs: Inputs, classes: List[str], opts: PrepareOptions) -> List[Planned]:
    """One job per row whose source is found; the others become failures."""
    needs_index = any(fmt != "folders" for fmt in inputs.formats.values())
    index = index_sources(opts.source, exclude=(opts.output,)) if needs_index else None
    planned = []
    for row in rows:
        source, cut, failure = find_source(index, row)
        if failure is not None:
            inputs.failures.append(failure)
            continue
        try:
            st = os.stat(source)
        except OSError as e:  # a dangling symlink
            inputs.failures.append(Failure(source, UNREADABLE, e.strerror or str(e), row.where))
            continue
        rel = output_relpath(row, inputs.formats[row.annotation], classes, opts.layout)
        job = PrepareJob(
            source,
            os.path.join(opts.output, rel),
            row.start if cut else None,
            row.end if cut else None,
            opts.short_side,
            opts.gop,
            opts.crf,
            opts.preset,
            opts.cabac,
            opts.b_pyramid,
        )
        planned.append(Planned(row, rel, job, (st.st_size, st.st_mtime_ns)))
    return planned


# --------------------------------------------------------------------------------------------- run
def _pool_result(p: Planned, status: str, value) -> PrepareResult:
    if status == POOL_OK:
        return value
    reason = {POOL_TIME_LIMIT: TIME_LIMIT, POOL_CRASHED: CRASHED}.get(status, CRASHED)
    remove_temporaries(p.job.output)
    return PrepareResult(p.job.output, False, reason, str(value))


def execute(
    todo: List[Planned],
    opts: PrepareOptions,
    inputs: Inputs,
    state: RunState,
    manifest,
    worker: Callable = prepare_video,
) -> None:
    """Run ``worker`` on the jobs in worker processes; record each verified output in the manifest at once."""
    from tqdm import tqdm

    folders = sorted({os.path.dirname(p.job.output) for p in todo})
    sweep_temporaries(folders)
    jobs = [p.job for p in todo]
    bar = tqdm(total=len(jobs), unit="video", desc="prepare", disable=not opts.progress, dynamic_ncols=True)
    results = run_tasks(worker, jobs, state.workers or opts.workers, opts.time_limit)
    try:
        for index, status, value in results:
            p, result = todo[index], _pool_result(todo[index], status, value)
            bar.update(1)
            if result.ok:
                with _ctrl_c_after():  # the manifest and the count the interrupt line gives agree
                    append_entry(manifest, entry_of(p, result))
                    state.good[id(p.row)] = p.rel
                    state.new += 1
                state.seconds += result.seconds
                state.rotated += bool(result.rotated)
                continue
            inputs.failures.append(Failure(p.job.source, result.reason, result.detail, p.row.where))
            if result.fatal:
                state.stopped = f"{result.reason}: {result.detail}"
                break
            bar.set_postfix(failed=len(inputs.failures), refresh=False)
    finally:
        results.close()  # kills the workers (a stopped run leaves none behind)
        bar.close()
        sweep_temporaries(folders)  # of the workers just killed


def _write_reports(opts: PrepareOptions, inputs: Inputs, classes: List[str], state: RunState) -> List[str]:
    written = []
    targets = annotation_outputs(inputs, opts.output, REPORTS)
    for path, target in targets.items():
        atomic_write_text(target, clean_annotation_text(path, inputs, state.good))
        written.append(target)
    classes_txt = os.path.join(opts.output, "classes.txt")
    if not _same_file(classes_txt, opts.classes):  # --classes OUT/classes.txt: the list read from it, kept as is
        atomic_write_text(classes_txt, "".join(c + "\n" for c in classes))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason", "detail", "row"])

    def position(f: Failure):  # input order: annotation, then line
        where, _, line = f.row.rpartition(":")
        return (where, int(line)) if line.isdigit() else (f.row, 0)

    writer.writerows([f.path, f.reason, f.detail, f.row] for f in sorted(inputs.failures, key=position))
    atomic_write_text(os.path.join(opts.output, "failed.csv"), buf.getvalue())
    return written + [os.path.join(opts.output, n) for n in ("classes.txt", "failed.csv")]


def summary(inputs: Inputs, planned: List[Planned], state: RunState, opts: PrepareOptions, wall: float) -> str:
    """The table printed at the end of a run."""
    splits = sorted({r.split for r in inputs.rows})
    ready = Counter(p.row.split for p in planned if id(p.row) in state.good)
    rows = Counter(r.split for r in inputs.rows)
    lines = [f"{'split':<12}{'rows':>8}{'ready':>8}", "-" * 28]
    lines += [f"{s:<12}{rows[s]:>8}{ready[s]:>8}" for s in splits]
    lines.append(
        f"{'total':<12}{len(inputs.rows):>8}{sum(ready.values()):>8}   "
        f"({state.new} prepared now, {state.skipped} already verified, {len(inputs.failures)} failed)"
    )
    reasons = Counter(f.reason for f in inputs.failures)
    if reasons:
        lines.append("failed: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()) + "  (see failed.csv)")
    if state.rotated:
        lines.append(
            f"{state.rotated} videos had a display rotation (phone video): turned upright, as decord and "
            "players show them"
        )
    if state.new:
        lines.append(
            f"{wall:.1f} s, {state.workers} workers: {state.new / wall:.2f} videos/s, "
            f"{state.seconds / state.new:.2f} s of one worker per video"
        )
    return "\n".join(lines)


def _same_file(a: str, b: str) -> bool:
    try:
        return bool(b) and os.path.samefile(a, b)
    except OSError:
        return False


def pick_workers(requested: int, jobs: int, echo: Callable) -> int:
    """``requested`` capped at the jobs and the usable cores; a capped request is said in one line."""
    cores = usable_cores()
    workers = max(1, min(requested, jobs, cores))
    if requested > cores:
        echo(
            f"--workers {requested}: using {workers} (this machine has {cores} usable cores"
            + (f", {jobs} videos to prepare)" if jobs < cores else ")")
        )
    return workers


def _prepare(opts: PrepareOptions, echo: Callable, worker: Callable, state: RunState):
    """The run under the output lock -> (inputs, planned jobs, files written)."""
    with output_lock(opts.output):
        inputs = read_inputs(opts.annotations)
        classes = resolve_classes(inputs, _load_classes(opts.classes))
        targets = annotation_outputs(inputs, opts.output, REPORTS)  # fail early on a name clash
        planned = plan_jobs(check_rows(inputs, classes), inputs, classes, opts)
        annotation_files = [a for a in opts.annotations if not os.path.isdir(a)]
        refuse_overwrites(
            [p.job.output for p in planned]
            + list(targets.values())
            + [os.path.join(opts.output, n) for n in REPORTS if n != LOCK],
            [p.job.source for p in planned] + annotation_files,
        )
        entries = load_manifest(opts.output)
        todo = []
        for p in planned:
            if is_verified(p, entries.get(p.rel), opts.output):
                state.good[id(p.row)] = p.rel
                state.skipped += 1
            else:
                todo.append(p)
        todo = keep_foreign_files(todo, opts.output, inputs)
        state.workers = pick_workers(opts.workers, len(todo), echo)
        with open(os.path.join(opts.output, MANIFEST), "a", encoding="utf-8") as manifest:
            claim(manifest, todo)
            execute(todo, opts, inputs, state, manifest, worker)
        return inputs, planned, _write_reports(opts, inputs, classes, state)


def run_prepare(opts: PrepareOptions, echo: Callable = print, worker: Callable = prepare_video) -> int:
    """The whole run; returns the exit code (0 done, 2 stopped: bad input for the run, output full...,
    130 interrupted: Ctrl-C).

    ``worker(PrepareJob) -> PrepareResult`` runs in the worker processes (a module-level function).
    """
    started = time.perf_counter()
    state = RunState()
    try:
        _check_options(opts)
        inputs, planned, written = _prepare(opts, echo, worker, state)
    except InputError as e:
        echo(f"error: {e}")
        return 2
    except OSError as e:  # the output folder filled up / went away while writing the reports
        echo(f"error: cannot write to {opts.output}: {e.strerror or e}; verified videos are kept, rerun to finish")
        return 2
    except KeyboardInterrupt:
        echo(
            f"interrupted: {state.new} videos prepared in this run and {state.skipped} verified before are kept in "
            f"{opts.output} (listed in {MANIFEST}); a rerun skips them and prepares the rest. The clean annotation "
            "files, classes.txt and failed.csv are written when a run completes"
        )
        return 130
    echo(summary(inputs, planned, state, opts, time.perf_counter() - started))
    echo("wrote " + ", ".join(written))
    if state.stopped:
        echo(f"error: stopped: {state.stopped}; verified videos are kept, rerun to finish")
        return 2
    return 0
