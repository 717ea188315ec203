"""The synthetic Kinetics-style set: layout, codecs, balance, determinism, decodability, and that
its classes need time (a single frame cannot tell a pair apart; two ordered frames can)."""
import csv
import hashlib
import os
import re
import subprocess
import sys
from collections import Counter

import av
import numpy as np
import pytest

from videoattn.utils.outputs import MANIFEST, read_manifest
from videoattn.datasets.synthetic import class_names, make_synthetic_dataset, render_video

NAME = re.compile(r"^[A-Za-z0-9_-]{11}_\d{6}_\d{6}\.(mp4|webm|avi)$")


def _digest(root):
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            p = os.path.join(folder, f)
            out[os.path.relpath(p, root)] = hashlib.md5(open(p, "rb").read()).hexdigest()
    return out


def test_layout_annotations_codecs_balance(synthetic_root):
    classes = open(os.path.join(synthetic_root, "classes.txt")).read().splitlines()
    assert classes == sorted(class_names(8)) and len(set(classes)) == 8
    codecs, fps, sizes = Counter(), set(), set()
    for split, per_class in (("train", 3), ("val", 2)):
        files = sorted(os.listdir(os.path.join(synthetic_root, split)))
        assert all(NAME.match(f) for f in files)
        rows = list(csv.DictReader(open(os.path.join(synthetic_root, f"{split}.csv"))))
        assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
        assert Counter(r["label"] for r in rows) == {c: per_class for c in classes}          # balanced
        listed = [l.split() for l in open(os.path.join(synthetic_root, f"{split}.txt"))]
        assert Counter(int(i) for _, i in listed) == {i: per_class for i in range(8)}
        by_id = {r["youtube_id"]: r for r in rows}
        for rel, idx in listed:
            row = by_id[os.path.basename(rel)[:11]]
            assert os.path.basename(rel).startswith(f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.")
            assert classes[int(idx)] == row["label"] and row["split"] == split
            with av.open(os.path.join(synthetic_root, rel)) as c:
                s = c.streams.video[0]
                codecs[s.codec_context.name] += 1
                fps.add(int(round(float(s.average_rate))))
                sizes.add((s.width, s.height))
    assert {"h264", "vp9", "mpeg4"} <= set(codecs)
    assert fps == {15, 25, 30} and len(sizes) >= 3


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(num_classes=4, train_per_class=2, val_per_class=1, min_seconds=0.6, max_seconds=0.8, size_scale=0.4)
    make_synthetic_dataset(str(tmp_path / "a"), seed=5, **kw)
    make_synthetic_dataset(str(tmp_path / "b"), seed=5, **kw)
    make_synthetic_dataset(str(tmp_path / "c"), seed=6, **kw)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 4 * 3 + 5 + 1  # + the list of outputs, .videoattn-outputs.json
    assert a != c


def _features(frame):
    """Per-frame object statistics: area, centroid x/y, contrast (object = far from the median colour)."""
    f = frame.astype(np.float32)
    diff = np.abs(f - np.median(f.reshape(-1, 3), axis=0)).sum(-1)
    mask = diff > 40
    yy, xx = np.nonzero(mask)
    area = mask.mean()
    cx = xx.mean() / frame.shape[1] if len(xx) else 0.5
    cy = yy.mean() / frame.shape[0] if len(yy) else 0.5
    return np.array([area, cx, cy, diff[mask].mean() if len(xx) else 0.0])


def _ks(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return np.abs(ca - cb).max()


@pytest.mark.parametrize("pair", [0, 1, 2, 3])
def test_single_frames_cannot_separate_a_pair_but_frame_order_can(pair):
    n, t = 150, 12
    rng = np.random.default_rng(pair)
    single, ordered = {}, {}
    for label in (2 * pair, 2 * pair + 1):
        single[label], ordered[label] = [], []
        for i in range(n):
            video = render_video(label, t, 48, 40, np.random.default_rng(1000 * label + i))
            single[label].append(_features(video[rng.integers(t)]))       # one random frame per video
            ordered[label].append(_features(video[-1]) - _features(video[0]))
    a, b = np.array(single[2 * pair]), np.array(single[2 * pair + 1])
    critical = 1.95 * np.sqrt(2 / n)      # KS, alpha = 0.001
    for k in range(a.shape[1]):
        assert _ks(a[:, k], b[:, k]) < critical, f"feature {k} of a single frame separates pair {pair}"
    # the change between the first and the last frame separates them: the best single threshold
    da, db = np.array(ordered[2 * pair]), np.array(ordered[2 * pair + 1])
    best = max(max(np.mean(np.r_[da[:, k] > 0, db[:, k] <= 0]), np.mean(np.r_[da[:, k] <= 0, db[:, k] > 0]))
               for k in range(da.shape[1]))
    assert best >= 0.95


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _make(out):
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_synthetic_dataset.py"), "--output", str(out),
           "--classes", "2", "--train-per-class", "1", "--val-per-class", "1", "--min-seconds", "0.3",
           "--max-seconds", "0.4", "--size-scale", "0.4", "--workers", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("name", ["train.csv", "classes.txt"])
def test_tool_keeps_a_users_file_of_its_names_and_reruns_into_its_own_folder(tmp_path, name):
    """issue 19: --output pointing at a dataset folder never replaces its train.csv or classes.txt;
    a rerun (``make demo`` twice) replaces only the files the tool wrote."""
    out = tmp_path / "data"
    out.mkdir()
    (out / name).write_bytes(b"the user's own file\n")
    r = _make(out)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {out / name} exists and was not written by "
                                             f"make_synthetic_dataset; not replaced: move it away or use another "
                                             f"--output"], r.stderr
    assert os.listdir(out) == [name] and (out / name).read_bytes() == b"the user's own file\n"
    os.remove(out / name)
    first = None
    for _ in range(2):
        r = _make(out)
        assert r.returncode == 0 and "wrote 2 train + 2 val videos" in r.stdout, r.stdout + r.stderr
        first = first or _digest(out)
    assert _digest(out) == first and len(first) == 4 + 5 + 1
    assert sorted(read_manifest(str(out))) == sorted(n for n in first if n != MANIFEST)
