"""The relation kind of the synthetic set (videoattn/datasets/synthetic_relation.py): layout,
annotations and balance through the real tool, determinism, and that its class is a relation across
frames (a single frame cannot tell the classes apart; a few ordered frames at two places can)."""

import csv
import hashlib
import importlib.util
import os
import subprocess
import sys
from collections import Counter

import av
import numpy as np
import pytest

from videoattn.datasets.synthetic_relation import (
    HOLD_TIME,
    RELATION_CLASSES,
    SLIDE_TIME,
    draw_scene,
    make_relation_dataset,
    render_scene,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _digest(root):
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = hashlib.md5(open(p, "rb").read()).hexdigest()
    return out


def _tool(*args):
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_synthetic_dataset.py"), *map(str, args)]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_tool_writes_the_relation_kind_balanced_with_a_test_split(tmp_path):
    out = tmp_path / "relation"
    r = _tool(
        "--kind",
        "relation",
        "--output",
        out,
        "--train-per-class",
        3,
        "--val-per-class",
        1,
        "--test-per-class",
        2,
        "--size-scale",
        0.6,
        "--min-seconds",
        0.5,
        "--max-seconds",
        0.7,
        "--workers",
        1,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wrote 6 train + 2 val + 4 test videos of 2 relation classes" in r.stdout, r.stdout
    classes = (out / "classes.txt").read_text().splitlines()
    assert classes == sorted(RELATION_CLASSES) == RELATION_CLASSES
    for split, per_class in (("train", 3), ("val", 1), ("test", 2)):
        rows = list(csv.DictReader(open(out / f"{split}.csv")))
        assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
        assert Counter(r["label"] for r in rows) == {c: per_class for c in classes}  # balanced
        listed = [line.split() for line in open(out / f"{split}.txt")]
        assert sorted(classes[int(i)] for _, i in listed) == sorted(r["label"] for r in rows)
        assert sorted(os.listdir(out / split)) == sorted(os.path.basename(p) for p, _ in listed)
        for rel, _ in listed:
            with av.open(str(out / rel)) as c:
                s = c.streams.video[0]
                assert s.width == s.height in (32, 64)  # 64-96 px squares x 0.6, in 16s, 48 (decord) -> 64
                assert sum(1 for _ in c.decode(s)) >= 7


def _tool_main(argv):
    """The tool's main() in this process (a refusal needs no encoding: no second interpreter)."""
    spec = importlib.util.spec_from_file_location(
        "make_synthetic_dataset", os.path.join(REPO, "tools", "make_synthetic_dataset.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--kind", "relation", "--classes", 3], "error: the relation set has 2 classes, got --classes 3"),
        (["--distractors", 2], "error: --distractors is an option of --kind relation; the motion kind has none"),
        (["--kind", "relation", "--distractors", -1], "error: num_distractors must be >= 0, got -1"),
    ],
)
def test_tool_refuses_what_the_relation_kind_cannot_do_in_one_line(tmp_path, capfd, argv, line):
    with pytest.raises(SystemExit) as e:
        _tool_main(["--output", tmp_path / "out", *argv])
    assert e.value.code == 1 and capfd.readouterr().err.strip() == line
    assert not os.path.exists(tmp_path / "out")


def test_relation_set_is_deterministic_for_a_seed(tmp_path):
    kw = dict(train_per_class=2, val_per_class=1, min_seconds=0.5, max_seconds=0.6, size_scale=0.6, workers=1)
    make_relation_dataset(str(tmp_path / "a"), seed=5, **kw)
    make_relation_dataset(str(tmp_path / "b"), seed=5, **kw)
    make_relation_dataset(str(tmp_path / "c"), seed=6, **kw)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 2 * 3 + 5 + 1  # + the list of outputs, .videoattn-outputs.json
    assert a != c


def _trip(scene, target, size):
    """Which way target ``target`` travels (+1 along its axis, -1 against), read from the pixels of
    the frame in the middle of its trip: is the object on the one side of its home or the other?
    (A distractor passing one of the two spots then can fool it.)"""
    track = scene.targets[target]
    away = render_scene(scene, [track.trip + SLIDE_TIME + HOLD_TIME / 2], size, size, np.random.default_rng(0))[0]
    yy, xx = np.mgrid[0:size, 0:size]

    def objectness(x, y):  # mean distance from the background colour over a disc inside the object
        x, y = np.clip([x, y], 0, 1)  # the side away from a target's trip may leave the frame
        disc = (xx - x * size) ** 2 + (yy - y * size) ** 2 <= (0.6 * scene.radius * size) ** 2
        return np.abs(away[disc].astype(np.float32) - scene.bg).sum(-1).mean()

    dx, dy = np.abs([track.dx, track.dy])  # the axis, not the way
    return np.sign(objectness(track.x + dx, track.y + dy) - objectness(track.x - dx, track.y - dy))


def _features(frame):
    """Per-frame statistics: object area, centroid x/y, spread x/y, contrast (object = far from the median colour)."""
    f = frame.astype(np.float32)
    diff = np.abs(f - np.median(f.reshape(-1, 3), axis=0)).sum(-1)
    yy, xx = np.nonzero(diff > 40)
    if not len(xx):
        return np.array([0.0, 0.5, 0.5, 0.0, 0.0, 0.0])
    h, w = frame.shape[:2]
    return np.array([len(xx) / (h * w), xx.mean() / w, yy.mean() / h, xx.std() / w, yy.std() / h, diff[yy, xx].mean()])


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(ca - cb).max()


def test_single_frames_cannot_separate_the_classes_but_two_places_at_two_times_can():
    n, t, size = 150, 12, 48
    rng = np.random.default_rng(0)
    single, moved = {}, {}
    for label in (0, 1):
        single[label], moved[label] = [], []
        for i in range(n):
            scene = draw_scene(label, np.random.default_rng(1000 * label + i))
            video = render_scene(scene, np.linspace(0, 1, t), size, size, np.random.default_rng(i))
            single[label].append(_features(video[rng.integers(t)]))  # one random frame per video
            moved[label].append(_trip(scene, 0, size) * _trip(scene, 1, size))  # > 0: the same way
    a, b = np.array(single[0]), np.array(single[1])
    critical = 1.95 * np.sqrt(2 / n)  # KS, alpha = 0.001
    for k in range(a.shape[1]):
        assert _ks(a[:, k], b[:, k]) < critical, f"feature {k} of a single frame separates the classes"
    opposite, same = np.array(moved[0]), np.array(moved[1])
    assert np.mean(np.r_[opposite < 0, same > 0]) >= 0.9
