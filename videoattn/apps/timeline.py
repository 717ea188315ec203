"""Per-window predictions of a long video: top-k rows, and the segments where the top label changes.

Pure functions on plain numbers (no model, no files). A window is a span ``[start_s, end_s)`` of
the video scored by the model (sliding windows, see :mod:`videoattn.engine.windows`); windows are
given in time order and may overlap (stride < length) or leave gaps (stride > length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class WindowTopK:
    """The ``k`` best classes of one window, best first."""

    start_s: float
    end_s: float
    indices: Tuple[int, ...]
    labels: Tuple[str, ...]
    scores: Tuple[float, ...]

    @property
    def centre_s(self) -> float:
        return (self.start_s + self.end_s) / 2


@dataclass(frozen=True)
class Segment:
    """Consecutive windows sharing their top-1 class, merged.

    ``score`` is the mean top-1 score of its windows, ``max_score`` the highest;
    ``first_window`` indexes the window list.
    """

    start_s: float
    end_s: float
    index: int
    label: str
    score: float
    max_score: float
    first_window: int
    num_windows: int


def window_topk(
    scores, starts: Sequence[float], ends: Sequence[float], class_names: Sequence[str], k: int = 5
) -> List[WindowTopK]:
    """Top-``k`` classes of every window.

    Args:
        scores: ``(W, C)`` per-window class scores (array or tensor; e.g. softmax probabilities).
        starts, ends: ``W`` window bounds in seconds.
        class_names: ``C`` names in score-column order.
        k: classes kept per window (at most ``C``); ties go to the lower class index.
    """
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (windows, classes), got shape {s.shape}")
    if not len(starts) == len(ends) == s.shape[0]:
        raise ValueError(f"{s.shape[0]} score rows but {len(starts)} starts and {len(ends)} ends")
    if len(class_names) != s.shape[1]:
        raise ValueError(f"{s.shape[1]} score columns but {len(class_names)} class names")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return [
        WindowTopK(
            float(a),
            float(b),
            tuple(int(i) for i in idx),
            tuple(class_names[i] for i in idx),
            tuple(float(row[i]) for i in idx),
        )
        for a, b, idx, row in zip(starts, ends, order, s)
    ]


def timeline_rows(windows: Sequence[WindowTopK]) -> List[dict]:
    """One row per window and rank (long format, for ``timeline.csv``):
    ``window, start_s, end_s, rank (1 = best), index, label, score``."""
    return [
        {
            "window": w,
            "start_s": round(win.start_s, 6),
            "end_s": round(win.end_s, 6),
            "rank": r + 1,
            "index": i,
            "label": label,
            "score": score,
        }
        for w, win in enumerate(windows)
        for r, (i, label, score) in enumerate(zip(win.indices, win.labels, win.scores))
    ]


def segments(windows: Sequence[WindowTopK]) -> List[Segment]:
    """Merge consecutive windows with the same top-1 class.

    A segment spans from its first window's start to its last window's end, except where two
    segments overlap (overlapping windows): both then meet half way through the overlap, where
    :func:`window_at` switches (for equal-length windows: half way between the two windows'
    centres). A gap between windows stays a gap. Segments are half-open ``[start_s, end_s)``.
    """
    groups: List[List[int]] = []
    for w, win in enumerate(windows):
        if groups and windows[groups[-1][0]].indices[0] == win.indices[0]:
            groups[-1].append(w)
        else:
            groups.append([w])
    bounds = [[windows[g[0]].start_s, windows[g[-1]].end_s] for g in groups]
    times = handovers(windows)
    for (a, b), g in zip(zip(bounds, bounds[1:]), groups[1:]):
        if a[1] > b[0]:  # overlap: meet where window_at switches
            a[1] = b[0] = float(times[g[0] - 1])
    out = []
    for g, (start, end) in zip(groups, bounds):
        top = [windows[w].scores[0] for w in g]
        out.append(
            Segment(
                start_s=start,
                end_s=end,
                index=windows[g[0]].indices[0],
                label=windows[g[0]].labels[0],
                score=float(np.mean(top)),
                max_score=float(max(top)),
                first_window=g[0],
                num_windows=len(g),
            )
        )
    return out


def handovers(windows: Sequence[WindowTopK]) -> np.ndarray:
    """``(W - 1,)`` times at which window ``i + 1`` takes over from window ``i``: half way through
    their overlap, or where window ``i + 1`` starts if they do not overlap."""
    h = [(a.end_s + b.start_s) / 2 if a.end_s > b.start_s else b.start_s for a, b in zip(windows, windows[1:])]
    return np.maximum.accumulate(np.array(h, dtype=np.float64)) if h else np.zeros(0)


def window_at(windows: Sequence[WindowTopK], t: float) -> int:
    """Index of the window that holds time ``t`` (see :func:`handovers`; a handover time belongs
    to the later window). Before the first handover it is window 0, after the last the last one;
    in a gap between windows, the earlier one. For equal-length overlapping windows this is the
    window whose centre is nearest to ``t``."""
    if not windows:
        raise ValueError("no windows")
    return int(np.searchsorted(handovers(windows), t, side="right"))
