"""Metrics and multi-view aggregation against hand-computed cases and brute force."""

import math

import numpy as np
import pytest
import torch
from evalkit import brute_balanced_accuracy, brute_macro_f1

from videoattn.evaluation.metrics import (
    VideoAggregator,
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
    per_class_accuracy,
    per_class_f1,
    topk_correct,
)


def aggregate_views(logits, video_index, num_videos, method="softmax"):
    """Per-video scores of one batch of views (a one-update VideoAggregator)."""
    agg = VideoAggregator(num_videos, logits.shape[1], method)
    agg.update(logits, video_index)
    return agg.video_scores()


def topk_accuracy(logits, labels, ks):
    return {k: v.float().mean().item() for k, v in topk_correct(logits, labels, ks).items()}


def test_topk_hand_computed():
    logits = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.5],  # ranking 1, 3, 0, 2
            [3.0, 2.0, 1.0, 0.0],  # ranking 0, 1, 2, 3
            [0.0, 0.1, 0.2, 0.3],
        ]
    )  # ranking 3, 2, 1, 0
    labels = torch.tensor([3, 0, 0])
    hits = topk_correct(logits, labels, (1, 2, 3, 4))
    assert hits[1].tolist() == [False, True, False]
    assert hits[2].tolist() == [True, True, False]
    assert hits[3].tolist() == [True, True, False]
    assert hits[4].tolist() == [True, True, True]
    acc = topk_accuracy(logits, labels, (1, 2, 5))
    assert acc[1] == pytest.approx(1 / 3) and acc[2] == pytest.approx(2 / 3)
    assert acc[5] == 1.0  # k > C: every label is within the top-C


def test_topk_rejects_bad_shapes():
    with pytest.raises(ValueError):
        topk_correct(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_confusion_and_class_accuracy_hand_computed():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 2, 0, 2])
    conf = confusion_matrix(preds, labels, num_classes=4)
    expected = [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert conf.tolist() == expected
    acc = per_class_accuracy(conf)
    assert acc[:3].tolist() == pytest.approx([0.5, 1.0, 2 / 3]) and math.isnan(acc[3])
    # class 3 has no sample: excluded from the mean (mmaction2's mean_class_accuracy)
    assert mean_class_accuracy(conf) == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    # differs from overall accuracy (4/6) on this imbalanced case
    assert mean_class_accuracy(conf) != pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), num_classes=4)


def test_balanced_accuracy_and_macro_f1_hand_computed_with_empty_classes():
    """Class 3: no sample and no prediction (0/0: left out of both); class 4: predicted, no sample
    (F1 0, no recall); class 5: a sample, never predicted (recall 0, F1 0)."""
    labels = [0, 0, 1, 2, 2, 2, 1, 5]
    preds = [0, 1, 1, 2, 0, 2, 4, 0]
    conf = confusion_matrix(torch.tensor(preds), torch.tensor(labels), num_classes=6)
    f1 = per_class_f1(conf)
    # class 0: TP 1, FP 2, FN 1 -> 2/5; class 1: TP 1, FP 1, FN 1 -> 1/2; class 2: TP 2, FN 1 -> 4/5
    assert f1[[0, 1, 2, 4, 5]].tolist() == pytest.approx([2 / 5, 1 / 2, 4 / 5, 0.0, 0.0]) and math.isnan(f1[3])
    assert macro_f1(conf) == pytest.approx((2 / 5 + 1 / 2 + 4 / 5) / 5)
    assert balanced_accuracy(conf) == pytest.approx((1 / 2 + 1 / 2 + 2 / 3 + 0) / 4)  # classes 0, 1, 2, 5
    assert balanced_accuracy(conf) == mean_class_accuracy(conf)
    assert macro_f1(conf) == pytest.approx(brute_macro_f1(labels, preds))
    assert balanced_accuracy(conf) == pytest.approx(brute_balanced_accuracy(labels, preds))
    empty = confusion_matrix(torch.zeros(0), torch.zeros(0), num_classes=3)
    assert math.isnan(macro_f1(empty)) and math.isnan(balanced_accuracy(empty))  # no video: no number


def test_balanced_accuracy_and_macro_f1_match_counting_on_random_cases():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        n, c = int(torch.randint(1, 30, (1,), generator=g)), int(torch.randint(1, 7, (1,), generator=g))
        labels = torch.randint(0, c, (n,), generator=g)
        # skewed predictions: often right, else mostly class 0, so some classes are never predicted
        preds = torch.where(torch.rand(n, generator=g) < 0.5, labels, torch.randint(0, 2, (n,), generator=g) % c)
        conf = confusion_matrix(preds, labels, c)
        assert macro_f1(conf) == pytest.approx(brute_macro_f1(labels.tolist(), preds.tolist())), trial
        assert balanced_accuracy(conf) == pytest.approx(brute_balanced_accuracy(labels.tolist(), preds.tolist()))


def _brute_force(logits, video_index, num_videos, method):
    out = np.full((num_videos, logits.shape[1]), np.nan)
    for v in range(num_videos):
        rows = [logits[i] for i in range(len(logits)) if video_index[i] == v]
        if not rows:
            continue
        if method == "sum":
            out[v] = np.sum(rows, axis=0)
        else:
            probs = [np.exp(r - r.max()) / np.exp(r - r.max()).sum() for r in rows]
            out[v] = np.mean(probs, axis=0) if method == "softmax" else np.max(probs, axis=0)
    return out


@pytest.mark.parametrize("method", ["softmax", "sum", "max"])
def test_aggregation_matches_brute_force(method):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(41, 7, generator=g, dtype=torch.float64) * 3
    video_index = torch.randint(0, 9, (41,), generator=g)
    video_index[video_index == 4] = 5  # video 4 has no view -> NaN row
    got = aggregate_views(logits, video_index, 9, method).numpy()
    ref = _brute_force(logits.numpy(), video_index.numpy(), 9, method)
    assert np.isnan(got[4]).all() and np.isnan(ref[4]).all()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_aggregation_split_updates_equal_one_update():
    """Accumulating in pieces (as each rank/batch does) gives the one-shot result."""
    g = torch.Generator().manual_seed(0)
    logits, vidx = torch.randn(30, 5, generator=g), torch.randint(0, 6, (30,), generator=g)
    for method in ("softmax", "sum", "max"):
        agg = VideoAggregator(6, 5, method)
        for chunk in torch.arange(30).split(7):
            agg.update(logits[chunk], vidx[chunk])
        torch.testing.assert_close(agg.video_scores(), aggregate_views(logits, vidx, 6, method))


def test_aggregation_methods_differ_on_a_known_case():
    """Two views: a confident wrong one and two mildly right ones; softmax averaging and the
    logit sum disagree (hand-computed)."""
    logits = torch.tensor([[6.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    vidx = torch.zeros(3, dtype=torch.long)
    p_right = 1 / (1 + math.exp(-2))  # 0.881
    soft = aggregate_views(logits, vidx, 1, "softmax")[0]
    assert soft[1].item() == pytest.approx((2 * p_right + 1 / (1 + math.exp(6))) / 3)
    assert soft.argmax().item() == 1  # 0.588 vs 0.412
    assert aggregate_views(logits, vidx, 1, "sum")[0].tolist() == [6.0, 4.0]  # class 0 wins
    mx = aggregate_views(logits, vidx, 1, "max")[0]
    assert mx[0].item() == pytest.approx(1 / (1 + math.exp(-6)))  # class 0 wins


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="softmax"):
        VideoAggregator(2, 2, "mean")
