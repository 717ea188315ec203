"""The manifest of a ``tools/prepare_data.py`` output folder: what this tool wrote and from what.

``<output>/.prepare_manifest.jsonl``, one JSON line per event, appended and fsynced by the run's main
process: a *claim* (``{"output": ..., "claimed": true}``) before a job runs, and an *entry* (the
output's size and mtime, frames, fps, size; the source's path, size and mtime; the encoding
settings; the span) right after the worker renamed the verified file into place. A rerun skips an
output whose entry still matches (:func:`is_verified`: a ``stat``, no decoding); a file at an
output path the manifest never named is not this tool's and is left alone (:func:`keep_foreign_files`).
Also the temporaries of killed writers (``.<name>.mp4.*.tmp``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

from videoattn.datasets.prepare import ENCODER, NOT_OURS, PrepareJob, PrepareResult
from videoattn.datasets.prepare_rows import Failure, Inputs, Row

MANIFEST = ".prepare_manifest.jsonl"


@dataclass
class Planned:
    row: Row
    rel: str
    job: PrepareJob
    source_stat: Tuple[int, int]


def _params(job: PrepareJob) -> str:
    """The settings an output was made with. Unreferenced B-frames (the default since 2026-12-07) add
    nothing, so outputs from before are kept by a rerun (the same frames; only PyAV's skipping gains
    less on them); ``b_pyramid`` outputs say so."""
    return (
        f"{ENCODER} short_side={job.short_side} gop={job.gop} crf={job.crf} preset={job.preset} cabac={int(job.cabac)}"
        + (" b_pyramid=1" if job.b_pyramid else "")
    )


def _job_key(p: Planned) -> dict:
    """What an output was made from: the source (path, size, mtime), the settings and the span."""
    return dict(
        source=os.path.abspath(p.job.source),
        source_size=p.source_stat[0],
        source_mtime_ns=p.source_stat[1],
        params=_params(p.job),
        span=[p.job.start, p.job.end],
    )


def entry_of(p: Planned, result: PrepareResult) -> dict:
    """The manifest line of a verified output."""
    return dict(
        output=p.rel,
        **_job_key(p),
        size=result.size,
        mtime_ns=result.mtime_ns,
        frames=result.frames,
        fps=result.fps,
        width=result.width,
        height=result.height,
    )


def _manifest_lines(out_dir: str) -> Iterator[dict]:
    """Every whole entry of the manifest; a torn last line (killed mid-write) is ignored."""
    with contextlib.suppress(FileNotFoundError), open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and isinstance(entry.get("output"), str):
                    yield entry


def load_manifest(out_dir: str) -> Dict[str, dict]:
    """{output relative path: its latest verified entry} (claims are not entries)."""
    return {e["output"]: e for e in _manifest_lines(out_dir) if not e.get("claimed")}


def claimed_outputs(out_dir: str) -> Set[str]:
    """Every output relative path this tool ever claimed or verified in ``out_dir``: its own files."""
    return {e["output"] for e in _manifest_lines(out_dir)}


def keep_foreign_files(todo: List[Planned], out_dir: str, inputs: Inputs) -> List[Planned]:
    """``todo`` without the jobs whose output path holds a file this tool did not write (the manifest
    never named it): each becomes a failed.csv row and the file stays as it is."""
    ours, kept = claimed_outputs(out_dir), []
    for p in todo:
        if p.rel not in ours and os.path.lexists(p.job.output):
            inputs.failures.append(
                Failure(
                    p.job.source,
                    NOT_OURS,
                    f"{p.job.output} exists and was not written by "
                    "prepare_data: move it away or choose another --output",
                    p.row.where,
                )
            )
        else:
            kept.append(p)
    return kept


def claim(handle, todo: List[Planned]) -> None:
    """Record, before any job runs, that these outputs are ours (one write, one fsync)."""
    if todo:
        handle.write("".join(json.dumps(dict(output=p.rel, claimed=True)) + "\n" for p in todo))
        handle.flush()
        os.fsync(handle.fileno())


def is_verified(p: Planned, entry: Optional[dict], out_dir: str) -> bool:
    """True if the output exists unchanged since it was verified with this job's source and settings."""
    if entry is None:
        return False
    try:
        st = os.stat(os.path.join(out_dir, p.rel))
    except OSError:
        return False
    want = dict(_job_key(p), size=st.st_size, mtime_ns=st.st_mtime_ns)
    return all(entry.get(k) == v for k, v in want.items())


def append_entry(handle, entry: dict) -> None:
    """Append one manifest line and fsync it (a torn line from a kill is ignored when read)."""
    handle.write(json.dumps(entry) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def remove_temporaries(path: str) -> None:
    """Delete the temporary files a killed writer of ``path`` left (``.<name>.*.tmp``)."""
    folder, name = os.path.split(path)
    for tmp in glob.glob(os.path.join(glob.escape(folder), "." + glob.escape(name) + ".*.tmp")):
        with contextlib.suppress(OSError):
            os.remove(tmp)


def sweep_temporaries(folders) -> None:
    """Delete the temporary files of killed writers (``.<name>.mp4.*.tmp``) in ``folders`` (one listing
    each); called under the output lock, so no live writer owns them."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if name.startswith(".") and name.endswith(".tmp") and ".mp4." in name:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))
