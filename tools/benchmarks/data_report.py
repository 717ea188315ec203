"""What ``tools/benchmark.py data`` prints from its measurements: the table, the goals, the decoder
exactness table and the decoders' memory (:mod:`benchmarks.data` measures, this formats)."""

from __future__ import annotations

from typing import Dict, List, Sequence

from benchmarks import decoders
from benchmarks.decoders import Rate

MULTI = "ours, raw, clips_per_video=2"
SETS = ("raw", "prepared", "prepared, referenced B-frames")  # file sets, in the order rows name them


def row_set(name: str) -> str:
    """Which file set a row ran on (the set it names; the raw files otherwise)."""
    return next((s for s in reversed(SETS) if s in name), "raw")


def own_bound(name: str) -> str:
    """The decode-only bound of an "ours" row: its decoder's, on its files."""
    decoder = "decord" if "decoding_backend=decord" in name else "pyav"
    return f"decode-only bound: {decoder}, {row_set(name)}"


def table(rates: Dict[str, Rate]) -> List[str]:
    lines = [
        f"| {'pipeline':<64} | clips/CPU-s (per core) | clips/s (wall) | vs its decoder's bound |",
        f"|{'-' * 66}|-----------------------:|---------------:|-----------------------:|",
    ]
    for name, rate in rates.items():
        bound = rates.get(own_bound(name)) if name.startswith("ours") else None
        ratio = f"{rate.per_core / bound.per_core:21.2f}x" if bound else f"{'-':>22}"
        lines.append(f"| {name:<64} | {rate.per_core:22.2f} | {rate.per_second:14.2f} | {ratio} |")
    return lines


def clips_per_video_line(rates: Dict[str, Rate]) -> str:
    """Our loader with ``data.clips_per_video=2`` vs 1 on the same raw set, per core (same rounds)."""
    two, one = rates[MULTI].per_core, rates["ours, raw"].per_core
    return f"clips_per_video=2 vs 1 (ours, raw, per core): {two / one:.2f}x ({two:.2f} vs {one:.2f} clips/CPU-s)"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def goals(rates: Dict[str, Rate], status: Dict[str, str]) -> List[str]:
    """The issue's goals, each on the same files: prepared vs raw, ours vs the best peer loader on
    raw and on prepared files, the loader vs its decoder's bound; and what the decoders buy."""
    core = {k: v.per_core for k, v in rates.items()}
    ours_raw, ours_prep = core["ours, raw"], core["ours, prepared"]
    lines = [
        f"prepared vs raw (ours, per core): {ours_prep / ours_raw:.2f}x (goal >= 2x: {_met(ours_prep >= 2 * ours_raw)})"
    ]
    for where in SETS[:2]:
        peer = {k: v for k, v in core.items() if row_set(k) == where and not k.startswith(("ours", "decode"))}
        peer = {k: v for k, v in peer.items() if "decode only" not in k and k.endswith(where)}
        if peer:
            best, ours = max(peer, key=peer.get), core[f"ours, {where}"]
            lines.append(
                f"ours vs the best peer loader on the same {where} files (per core): {ours / peer[best]:.2f}x vs "
                f"{best} (goal >= 1.5x: {_met(ours >= 1.5 * peer[best])})"
            )
            uint8 = core.get(f"ours, {where}, normalize_on_device")
            if uint8 and "mmaction2" in best:  # mmaction2's pipeline hands over uint8, normalised on the device
                lines.append(
                    f"  the same output as {best} (uint8 clips, normalize_on_device: the GPU default): "
                    f"{uint8 / peer[best]:.2f}x (goal >= 1.5x: {_met(uint8 >= 1.5 * peer[best])})"
                )
    lines += [f"peer not measured: {k}: {v}" for k, v in status.items() if v]
    lines.append(
        "loader / its decoder's decode-only bound (goal >= 0.95x): "
        + ", ".join(
            f"{k} {core[k] / core[own_bound(k)]:.2f}x" for k in core if k.startswith("ours") and own_bound(k) in core
        )
    )
    refb = "ours, prepared, referenced B-frames"
    if refb in core:
        lines.append(
            f"unreferenced vs referenced B-frames in prepared files (ours, per core): {ours_prep / core[refb]:.2f}x"
        )
    for where in SETS[:2]:
        bounds = {
            k.split(": ", 1)[1].rsplit(", " + where, 1)[0]: v
            for k, v in core.items()
            if k.startswith("decode-only bound: ") and row_set(k) == where
        }
        if "pyav" in bounds:
            lines.append(
                f"decode-only bounds on {where} files vs pyav: "
                + ", ".join(f"{m} {v / bounds['pyav']:.2f}x" for m, v in bounds.items() if m != "pyav")
            )
    return lines


def exactness_table(rows: Sequence[decoders.Exactness], versions: Dict[str, str]) -> List[str]:
    """decoder x file kind: equal / not (see :meth:`decoders.Exactness.verdict`)."""
    kinds = list(dict.fromkeys(r.kind for r in rows))
    names = list(dict.fromkeys(r.decoder for r in rows))
    cell = {(r.decoder, r.kind): r.verdict() for r in rows}
    lines = [
        "| decoder | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for n in names:
        lines.append(f"| {n} ({versions.get(n, '?')}) | " + " | ".join(cell.get((n, k), "-") for k in kinds) + " |")
    frames = rows[0].frames if rows else 0
    clips = rows[0].clips if rows else 0
    return [
        f"exactness: {clips} clips ({frames} frames) per file, against a sequential PyAV decode of every frame"
    ] + lines


def rss_lines(results: Dict[str, Dict[int, float]]) -> List[str]:
    lines = []
    for name, rss in results.items():
        early, late = sorted(rss)
        growth = rss[late] / rss[early] - 1
        within = "within" if abs(growth) <= 0.1 else "OUTSIDE"
        lines.append(
            f"resident memory, {name} (decode only, one fresh process): {rss[early]:.0f} MiB after {early} clips, "
            f"{rss[late]:.0f} MiB after {late} clips: {growth * 100:+.1f}% ({within} 10%)"
        )
    return lines
