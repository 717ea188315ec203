"""tools/test_net.py end to end on real videos: 1 process vs 2 torchrun/gloo processes, an odd
number of videos, one corrupt video, one missing file; aggregation re-done by brute force from
the saved per-view logits. Also evaluate_clips (training's validation) on 2 ranks."""

import csv
import json
import os

import numpy as np
import pytest
from evalkit import BROKEN_ID, MISSING_ID, brute_balanced_accuracy, brute_macro_f1, check, run

pytestmark = pytest.mark.slow  # real test_net / evaluation runs on 1 and 2 processes


@pytest.fixture(scope="module")
def one_and_two_ranks(setup):
    out1, out2 = str(setup["tmp"] / "one"), str(setup["tmp"] / "two")
    args = ["tools/test_net.py", "--config", setup["cfg"], "--checkpoint", setup["ckpt"]]
    check(run(args + [f"output_dir={out1}"]))
    p2 = check(run(args + [f"output_dir={out2}"], nproc=2))
    return os.path.join(out1, "test"), os.path.join(out2, "test"), p2


def _read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_outputs_and_unreadable_accounting(one_and_two_ranks, setup):
    d1, _, _ = one_and_two_ranks
    for name in (
        "metrics.json",
        "per_class.csv",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "predictions.csv",
        "view_logits.npz",
    ):
        assert os.path.getsize(os.path.join(d1, name)) > 0, name
    m = json.load(open(os.path.join(d1, "metrics.json")))
    assert m["num_videos"] == 5 and m["num_unreadable"] == 1 and m["num_missing"] == 1
    assert [u["path"] for u in m["unreadable"]] == [setup["data"]["broken"]]
    assert m["unreadable"][0]["error"]
    assert any(MISSING_ID in row for row in m["missing"])
    assert m["num_clips"] == 5 * 6
    for key in ("clip_top1", "video_top1", "video_top5", "mean_class_accuracy", "balanced_accuracy", "macro_f1"):
        assert 0.0 <= m[key] <= 1.0, key
    conf = np.array([r[1:] for r in _read(os.path.join(d1, "confusion_matrix.csv"))[1:]], dtype=int)
    assert conf.shape == (8, 8) and conf.sum() == 5
    per_class = _read(os.path.join(d1, "per_class.csv"))[1:]
    assert sum(int(r[2]) for r in per_class) == 5
    preds = _read(os.path.join(d1, "predictions.csv"))
    assert preds[0][:5] == ["video", "label", "label_name", "correct", "pred1"] and len(preds) == 1 + 6
    broken = [r for r in preds[1:] if BROKEN_ID in r[0]]
    assert len(broken) == 1 and broken[0][4] == ""  # listed, not scored


def test_video_metrics_match_brute_force_from_view_logits(one_and_two_ranks, setup):
    """Independent recomputation: softmax-average the saved per-view logits per video with numpy."""
    d1, _, _ = one_and_two_ranks
    z = np.load(os.path.join(d1, "view_logits.npz"))
    logits, vidx, labels = z["logits"].astype(np.float64), z["video_index"], z["label"]
    assert len(logits) == 30 and sorted(set(vidx.tolist())) == [0, 1, 3, 4, 5]  # video 2 is the broken one
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    clip_top1 = np.mean(logits.argmax(1) == labels)
    video_pred, video_label, video_top5 = {}, {}, {}
    for v in sorted(set(vidx.tolist())):
        p = probs[vidx == v].mean(0)
        video_pred[v], video_label[v] = int(p.argmax()), int(labels[vidx == v][0])
        video_top5[v] = video_label[v] in np.argsort(-p)[:5]
    m = json.load(open(os.path.join(d1, "metrics.json")))
    assert m["clip_top1"] == pytest.approx(clip_top1)
    assert m["video_top1"] == pytest.approx(np.mean([video_pred[v] == video_label[v] for v in video_pred]))
    assert m["video_top5"] == pytest.approx(np.mean(list(video_top5.values())))
    per_class = {}
    for v in video_pred:
        per_class.setdefault(video_label[v], []).append(video_pred[v] == video_label[v])
    assert m["mean_class_accuracy"] == pytest.approx(np.mean([np.mean(x) for x in per_class.values()]))
    truth, guess = [video_label[v] for v in sorted(video_pred)], [video_pred[v] for v in sorted(video_pred)]
    assert m["balanced_accuracy"] == pytest.approx(brute_balanced_accuracy(truth, guess))
    assert m["macro_f1"] == pytest.approx(brute_macro_f1(truth, guess))
    names = [line.strip() for line in open(setup["data"]["classes"]) if line.strip()]
    rows = [r for r in _read(os.path.join(d1, "predictions.csv"))[1:] if r[4]]
    assert len(rows) == len(video_pred)
    for row, v in zip(rows, sorted(video_pred)):
        p = probs[vidx == v].mean(0)
        assert int(row[1]) == video_label[v] and row[2] == names[video_label[v]]
        assert row[4:9] == [names[i] for i in np.argsort(-p)[:5]]
        assert [float(x) for x in row[9:14]] == pytest.approx(np.sort(p)[::-1][:5], rel=1e-4)


def test_two_ranks_equal_one_rank(one_and_two_ranks):
    d1, d2, p2 = one_and_two_ranks
    m1, m2 = (json.load(open(os.path.join(d, "metrics.json"))) for d in (d1, d2))
    assert m2.pop("world_size") == 2 and m1.pop("world_size") == 1
    assert m1 == m2
    for name in ("predictions.csv", "per_class.csv", "confusion_matrix.csv"):
        assert _read(os.path.join(d1, name)) == _read(os.path.join(d2, name)), name
    z1, z2 = np.load(os.path.join(d1, "view_logits.npz")), np.load(os.path.join(d2, "view_logits.npz"))
    np.testing.assert_array_equal(z1["video_index"], z2["video_index"])
    np.testing.assert_array_equal(z1["view_index"], z2["view_index"])
    np.testing.assert_allclose(z1["logits"], z2["logits"], atol=1e-5)
    assert "rank1" not in p2.stdout  # only rank 0 logs
    summary = f"mean class acc (balanced acc) {m1['balanced_accuracy']:.4f} | macro-F1 {m1['macro_f1']:.4f} -> "
    assert summary in p2.stdout


def test_evaluate_clips_two_ranks_count_each_video_once(setup):
    """Validation with an odd number of videos (and a broken one the loader replaces) gives the
    same numbers on 2 ranks as in 1 process."""
    out1, out2 = str(setup["tmp"] / "val1.json"), str(setup["tmp"] / "val2.json")
    args = ["tests/engine/eval_worker.py", setup["cfg"], setup["ckpt"]]
    check(run(args + [out1]))
    check(run(args + [out2], nproc=2))
    r1, r2 = json.load(open(out1)), json.load(open(out2))
    assert r1["num_clips"] == r2["num_clips"] == 5  # the broken video's replacement is a duplicate
    for k in ("top1", "top5", "loss"):
        assert r1[k] == pytest.approx(r2[k], abs=1e-5), k
    assert [p for p, _ in r2["skipped"]] and all(BROKEN_ID in p for p, _ in r1["skipped"] + r2["skipped"])
    for method in ("softmax", "sum", "max"):  # per-video aggregation merged over ranks (all_reduce)
        np.testing.assert_allclose(r2["aggregated"][method], r1["aggregated"][method], rtol=1e-12, atol=1e-12)
