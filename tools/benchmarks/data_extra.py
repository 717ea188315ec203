"""The data benchmark's extra runs (``tools/benchmark.py data``): the keyframe sweep, the loader's
and each decoder's resident memory, the decoders' exactness table."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import List, Tuple

import numpy as np

from benchmarks import data_report, decoders
from benchmarks.decoders import MODES, rss_mb, timed
from benchmarks.kinetics_set import prepare_set

Clips = List[Tuple[str, np.ndarray]]


def on_prepared(clips: Clips, prepared_root: str) -> Clips:
    """``clips`` with each raw path replaced by its prepared copy (same stem; frames kept whole)."""
    where = {
        os.path.splitext(n)[0]: os.path.join(d, n)
        for d, _, files in os.walk(prepared_root)
        for n in files
        if n.endswith(".mp4") and not n.startswith(".")
    }
    return [(where[os.path.splitext(os.path.basename(p))[0]], idx) for p, idx in clips]


def gop_sweep(args, raw: str, clips: Clips, work: str) -> List[str]:
    """Per keyframe interval (and GOP 32 with x264's default CABAC instead of CAVLC): prepared MB per
    10 s of video and the default decoder's (PyAV) decode-only CPU ms per clip on ``clips`` (the clips
    our loader drew), against the raw files (x264's default keyframe interval)."""
    tens = args.videos * args.seconds / 10
    pyav = MODES["pyav"]
    raw_ms = timed(decoders.clip_stream(pyav, clips), len(clips)).cpu * 1e3
    rows, raw_mb = [], 0.0
    for gop, cabac in [(g, False) for g in args.gops] + [(32, True)]:
        out = os.path.join(work, f"gop{gop}_{cabac}")
        shutil.rmtree(out, ignore_errors=True)
        p = prepare_set(raw, out, gop, args.prep_workers, cabac=cabac)
        ms = timed(decoders.clip_stream(pyav, on_prepared(clips, out)), len(clips)).cpu * 1e3
        rows.append(
            f"| {gop}{', CABAC' if cabac else ''} | {p.mb_prepared / tens:.2f} | {ms:.1f} | {raw_ms / ms:.2f}x | "
            f"{p.cpu_s / p.videos:.2f} |"
        )
        raw_mb = p.mb_raw
        shutil.rmtree(out, ignore_errors=True)
    return [
        "| keyframe every (short side 320, CAVLC) | MB per 10 s | decode-only CPU ms per clip (PyAV) | vs raw | "
        "prepare CPU s per video |",
        "|---|---:|---:|---:|---:|",
        f"| raw: 360p, x264 defaults (250, CABAC) | {raw_mb / tens:.2f} | {raw_ms:.1f} | 1.00x | - |",
    ] + rows


def rss_check(data, workers: int, early: int, late: int, batch_size: int, seed: int) -> str:
    """Resident memory (main + workers) of one persistent ``workers``-worker loader after ``early``
    and ``late`` clips: the later must stay within 10% of the earlier."""
    from videoattn.data import build_dataset, build_loader

    data = replace(data, num_workers=workers)
    loader = build_loader(build_dataset(data, "train"), data, batch_size, seed=seed)
    seen, epoch, rss, procs = 0, 0, {}, 0
    while seen < late:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen += int(batch["clip"].shape[0])
            pids = [os.getpid()] + [w.pid for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
            for mark in (early, late):
                if seen >= mark and mark not in rss:
                    rss[mark], procs = sum(rss_mb(pid) for pid in pids), len(pids)
            if seen >= late:
                break
        epoch += 1
    growth = rss[late] / rss[early] - 1
    return (
        f"resident memory, {workers} workers + main ({procs} processes): {rss[early]:.0f} MiB after {early} clips, "
        f"{rss[late]:.0f} MiB after {late} clips: {growth * 100:+.1f}% "
        f"({'within' if abs(growth) <= 0.1 else 'OUTSIDE'} 10%)"
    )


def decoder_rss(clips: Clips, early: int, late: int) -> List[str]:
    """Each decoder's resident memory after ``early`` and ``late`` clips (``clips`` cycled), each in
    a fresh process."""
    names = [n for n in ("decord", "decord2", "pyav") if not (MODES[n].side and decoders.decord2_missing())]
    return data_report.rss_lines({n: decoders.run(MODES[n], "rss", clips=clips, marks=[early, late]) for n in names})


def exactness(work: str) -> List[str]:
    """Every decoder on every file kind of :func:`decoders.make_kinds` (the table of record)."""
    kinds = decoders.make_kinds(os.path.join(work, "kinds"))
    rows, versions = [], {}
    for name, mode in MODES.items():
        if mode.side and decoders.decord2_missing():
            continue
        rows += decoders.exactness_rows(mode, kinds, per_recipe=6, views=10)
        versions[name] = decoders.run(mode, "version") if mode.side else decoders.library_version(mode)
    return data_report.exactness_table(rows, versions)
