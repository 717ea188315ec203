"""tools/test_net.py on annotations as users bring them: a CSV saved with a byte-order mark by a
spreadsheet program, with rows listed twice, under a data root holding a symlink cycle, must score
exactly what the clean CSV scores; one video with two labels is a one-line error."""

import csv
import json
import os

import pytest
from evalkit import check, make_eval_root, make_random_checkpoint, run, write_config

from videoattn.config import load_config

pytestmark = pytest.mark.slow  # real test_net runs


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalann")  # its own copy: the test adds a symlink loop to the data root
    data = make_eval_root(synthetic_root, str(tmp / "data"), num_good=5)
    cfg = write_config(str(tmp / "cfg.yaml"), data)
    ckpt = make_random_checkpoint(load_config(cfg), str(tmp / "ckpt.pyth"))
    args = ["tools/test_net.py", "--config", cfg, "--checkpoint", ckpt]
    clean = check(run(args + [f"output_dir={tmp / 'clean'}"], timeout=240))
    rows = open(os.path.join(data["root"], "val.csv"), encoding="utf-8").read().splitlines()
    hostile = tmp / "hostile.csv"  # BOM, CRLF, the first good row and the corrupt video's row twice
    text = "\r\n".join(rows + [rows[1], rows[3], rows[1]]) + "\r\n"
    hostile.write_bytes(b"\xef\xbb\xbf" + text.encode())
    os.symlink("..", os.path.join(data["root"], "val", "loop"))  # root/val/loop -> root: a cycle
    dirty = check(run(args + [f"output_dir={tmp / 'dirty'}", f"data.test_split={hostile}"], timeout=240))
    return {"tmp": tmp, "data": data, "args": args, "rows": rows, "clean": clean, "dirty": dirty}


def _metrics(tmp, name):
    return json.load(open(os.path.join(tmp, name, "test", "metrics.json")))


def test_bom_duplicates_and_symlink_cycle_score_like_the_clean_csv(runs):
    clean, dirty = _metrics(runs["tmp"], "clean"), _metrics(runs["tmp"], "dirty")
    assert (dirty["num_videos"], dirty["num_unreadable"], dirty["num_missing"]) == (5, 1, 1)
    for key in (
        "num_videos",
        "num_unreadable",
        "num_missing",
        "num_clips",
        "clip_top1",
        "video_top1",
        "video_top5",
        "mean_class_accuracy",
    ):
        assert dirty[key] == clean[key], key
    with (
        open(os.path.join(runs["tmp"], "clean", "test", "predictions.csv"), newline="") as a,
        open(os.path.join(runs["tmp"], "dirty", "test", "predictions.csv"), newline="") as b,
    ):
        assert list(csv.reader(a)) == list(csv.reader(b))
    out = runs["dirty"].stdout
    warned = [line for line in out.splitlines() if "duplicate rows ignored" in line]
    assert len(warned) == 1 and "3 duplicate rows ignored" in warned[0]
    assert sum("symlink cycle" in line for line in out.splitlines()) == 1


def test_one_video_with_two_labels_is_a_one_line_error(runs, tmp_path):
    rows = runs["rows"]
    label, rest = rows[1].split(",", 1)
    other = next(r.split(",", 1)[0] for r in rows[2:] if r.split(",", 1)[0] != label)
    bad = tmp_path / "conflict.csv"
    bad.write_text("\n".join(rows + [f"{other},{rest}"]) + "\n")
    proc = run(runs["args"] + [f"output_dir={tmp_path / 'out'}", f"data.test_split={bad}"], timeout=240)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:{len(rows) + 1}: ")
    assert f"labelled {other!r} here but {label!r} at {bad}:2" in lines[0]
