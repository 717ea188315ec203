"""Timeline helpers: per-window top-k, segments where the top label changes, window at a time."""

import numpy as np
import pytest
import torch

from videoattn.apps.timeline import segments, timeline_rows, window_at, window_topk

NAMES = ["a", "b", "c", "d", "e"]


def _windows(tops, starts, length, names=NAMES, second=None):
    """Windows whose top-1 is ``tops[i]`` with score 0.5 + i / 100 (and ``second`` next best)."""
    scores = np.zeros((len(tops), len(names)))
    for i, t in enumerate(tops):
        scores[i, t] = 0.5 + i / 100
        scores[i, (t + 1) % len(names) if second is None else second] = 0.2
    return window_topk(scores, starts, [s + length for s in starts], names, k=2)


def test_window_topk_matches_torch_topk():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(7, 5, generator=g).softmax(dim=1)
    wins = window_topk(scores, [0.5 * i for i in range(7)], [0.5 * i + 2 for i in range(7)], NAMES, k=3)
    ref_v, ref_i = scores.topk(3, dim=1)
    assert len(wins) == 7
    for w, v, i in zip(wins, ref_v, ref_i):
        assert w.indices == tuple(i.tolist()) and w.labels == tuple(NAMES[j] for j in i.tolist())
        assert np.allclose(w.scores, v.tolist())
    assert (wins[3].start_s, wins[3].end_s, wins[3].centre_s) == (1.5, 3.5, 2.5)


def test_window_topk_ties_go_to_the_lower_index_and_k_is_capped():
    wins = window_topk(np.array([[0.1, 0.3, 0.3, 0.3]]), [0], [1], ["w", "x", "y", "z"], k=10)
    assert wins[0].indices == (1, 2, 3, 0)


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.zeros(5), [0], [1], NAMES), "must be \\(windows, classes\\)"),
        ((np.zeros((2, 5)), [0], [1, 2], NAMES), "2 score rows but 1 starts"),
        ((np.zeros((1, 4)), [0], [1], NAMES), "4 score columns but 5 class names"),
        ((np.zeros((1, 5)), [0], [1], NAMES, 0), "k must be >= 1"),
    ],
)
def test_window_topk_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        window_topk(*args)


def test_timeline_rows_long_format():
    rows = timeline_rows(_windows([0, 2, 2], [0, 1, 2], 2.0))
    assert len(rows) == 6
    assert rows[2] == {"window": 1, "start_s": 1.0, "end_s": 3.0, "rank": 1, "index": 2, "label": "c", "score": 0.51}
    assert [r["rank"] for r in rows] == [1, 2] * 3


def test_segments_of_back_to_back_windows():
    wins = _windows([0, 0, 1, 0], [0, 2, 4, 6], 2.0)
    segs = segments(wins)
    assert [(s.start_s, s.end_s, s.label, s.first_window, s.num_windows) for s in segs] == [
        (0.0, 4.0, "a", 0, 2),
        (4.0, 6.0, "b", 2, 1),
        (6.0, 8.0, "a", 3, 1),
    ]
    assert segs[0].score == pytest.approx(0.505) and segs[0].max_score == pytest.approx(0.51)
    assert segments([]) == []


def test_segments_meet_half_way_in_an_overlap_and_keep_gaps():
    segs = segments(_windows([0, 0, 1, 1], [0, 1, 2, 3], 2.0))  # length 2, stride 1
    assert [(s.start_s, s.end_s, s.label) for s in segs] == [(0.0, 2.5, "a"), (2.5, 5.0, "b")]
    segs = segments(_windows([0, 1], [0, 3], 2.0))  # stride 3 > length 2
    assert [(s.start_s, s.end_s) for s in segs] == [(0.0, 2.0), (3.0, 5.0)]


def test_segments_agree_with_window_at_everywhere():
    # independent check of the boundary rule: the segment holding t has the top label of the window at t
    rng = np.random.default_rng(0)
    for stride in (0.5, 1.0, 1.6):
        tops = rng.integers(0, 3, size=12).tolist()
        wins = _windows(tops, [stride * i for i in range(12)], 2.0)
        segs = segments(wins)
        assert sum(s.num_windows for s in segs) == 12
        assert all(a.index != b.index for a, b in zip(segs, segs[1:]))
        for t in np.concatenate([np.arange(0.013, wins[-1].end_s, 0.05), [s.start_s for s in segs]]):
            inside = [s for s in segs if s.start_s <= t < s.end_s]  # half-open, as window_at's ties
            if stride > 1.0 and not inside:  # a gap between windows
                continue
            assert len(inside) == 1 and inside[0].index == wins[window_at(wins, t)].indices[0], (stride, t)


def test_window_at_nearest_centre_and_gaps():
    wins = _windows([0, 1, 2], [0, 1, 2], 2.0)  # centres 1, 2, 3
    assert [window_at(wins, t) for t in (-5, 1.49, 1.5, 1.51, 2.5, 99)] == [0, 0, 1, 1, 2, 2]
    gap = _windows([0, 1], [0, 3], 2.0)  # a gap holds the earlier window until the next starts
    assert [window_at(gap, t) for t in (2.5, 2.99, 3.0)] == [0, 0, 1]
    with pytest.raises(ValueError):
        window_at([], 0.0)
