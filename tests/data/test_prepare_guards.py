"""tools/prepare_data.py as a user meets it (issue 19): never writes over an input, bad spans and
options are one line or one failed.csv row, pipes, Ctrl-C, --workers, report names, folder inputs
with stray videos, list lines naming non-videos, phone videos with a display rotation."""
import csv
import hashlib
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from prepare_helpers import long_indexed_video
from videoattn.datasets.prepare_run import load_manifest
from videoattn.datasets.synthetic import make_indexed_video
from videokit import rotated_video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "prepare_data.py")
HEADER = "label,youtube_id,time_start,time_end,split\n"


def _cmd(*args):
    return [sys.executable, TOOL, *map(str, args), "--short-side", "96", "--no-progress"]


def _env():
    return dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")


def _run(*args, **kw):
    return subprocess.run(_cmd(*args), env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _failed(out):
    with open(os.path.join(out, "failed.csv"), newline="") as f:
        return list(csv.reader(f))[1:]


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _one_line_error(r, code=2):
    assert r.returncode == code and "Traceback" not in r.stderr, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ------------------------------------------------------------------------- 1: outputs never inputs
@pytest.mark.parametrize("how", ["nested", "hard link", "symlinked folder"])
def test_an_output_that_is_a_source_video_is_refused(tmp_path, how):
    ds = tmp_path / "ds"
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "walking,vid,0,2,train\n")
    name = "vid_000000_000002.mp4"
    if how == "nested":  # --source ds/train --output ds, the source already in the output's layout
        src_dir = ds / "train"
        video = src_dir / "walking" / name
        video.parent.mkdir(parents=True)
        make_indexed_video(str(video), 20, 10, 320, 192)
    else:
        src_dir = tmp_path / "raw"
        src_dir.mkdir()
        video = src_dir / name
        make_indexed_video(str(video), 20, 10, 320, 192)
        (ds / "train").mkdir(parents=True)
        if how == "hard link":
            (ds / "train" / "walking").mkdir()
            os.link(video, ds / "train" / "walking" / name)
        else:
            os.symlink(src_dir, ds / "train" / "walking")
    before = _digest(video)
    line = _one_line_error(_run("--annotations", ann, "--source", src_dir, "--output", ds))
    assert "would replace the input" in line and str(video) in line
    assert _digest(video) == before
    assert not os.path.exists(ds / "failed.csv") and not os.path.exists(ds / "train.csv")


def test_output_equal_to_source_is_one_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_indexed_video(str(raw / "vid.mp4"), 20, 10, 160, 96)
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "walking,vid,0,1,train\n")
    line = _one_line_error(_run("--annotations", ann, "--source", raw, "--output", raw))
    assert "is the input folder" in line and "choose another --output" in line
    assert sorted(os.listdir(raw)) == ["vid.mp4"]


# ------------------------------------------------------------------------- 2, 13: numbers checked
def test_non_finite_spans_are_failed_rows_and_the_run_goes_on(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    long_indexed_video(str(raw / "vid.mp4"), 4, 10)
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "a,vid,nan,2,train\na,vid,0,inf,train\na,vid,0,nan,train\na,vid,0,2,train\n"
                   "a,vid,-inf,1,train\n")
    out = tmp_path / "out"
    r = _run("--annotations", ann, "--source", raw, "--output", out, "--workers", 1)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    failed = {row[3].rsplit(":", 1)[1]: row[1:3] for row in _failed(out)}
    assert sorted(failed) == ["2", "3", "4", "6"], failed
    assert all(reason == "bad row" and "finite" in detail for reason, detail in failed.values())
    assert open(out / "train.csv").read() == HEADER + "a,vid,0,2,train\n"
    assert os.listdir(out / "train" / "a") == ["vid_000000_000002.mp4"]


@pytest.mark.parametrize("value", ["-5", "nan", "0", "inf"])
def test_time_limit_is_validated(tmp_path, value):
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "a,vid,0,2,train\n")
    (tmp_path / "raw").mkdir()
    line = _one_line_error(_run("--annotations", ann, "--source", tmp_path / "raw", "--output", tmp_path / "out",
                                "--time-limit", value))
    assert "--time-limit must be a positive number of seconds" in line


# ---------------------------------------------------------------------- 8: an annotation pipe
def test_annotation_given_as_a_pipe_is_read_once(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_indexed_video(str(raw / "vid.mp4"), 30, 10, 160, 96)
    out = tmp_path / "out"
    script = (f"{sys.executable} {TOOL} --annotations <(printf '{HEADER.strip()}\\nwalking,vid,0,2,train\\n') "
              f"--source {raw} --output {out} --short-side 96 --workers 1 --no-progress")
    r = subprocess.run(["bash", "-c", script], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert os.listdir(out / "train" / "walking") == ["vid_000000_000002.mp4"]
    assert _failed(out) == []


# --------------------------------------------------------------------------------- 9: Ctrl-C
@pytest.mark.slow
def test_ctrl_c_says_what_was_kept(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    long_indexed_video(str(src / "vidK.mp4"), 16, 30)
    ann = tmp_path / "train.csv"
    spans = [(s, s + d) for s in range(0, 13) for d in (1, 2, 3)]  # 39 rows: Ctrl-C lands mid-run
    ann.write_text(HEADER + "".join(f"a,vidK,{s},{e},train\n" for s, e in spans))
    out = tmp_path / "out"
    # a terminal's Ctrl-C: SIGINT to the whole foreground process group (the tool and its workers)
    proc = subprocess.Popen(_cmd("--annotations", ann, "--source", src, "--output", out, "--workers", 1),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while len(load_manifest(str(out))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    kept = len(load_manifest(str(out)))
    assert 2 <= kept < len(spans), "the interrupt must land mid-run"
    assert proc.returncode == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stdout + stderr
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("interrupted: ") and "kept in" in last and "a rerun skips them" in last, last
    done = int(last.split()[1])
    assert done == kept
    assert not [n for _, _, files in os.walk(out) for n in files if n.endswith(".tmp")]


# ------------------------------------------------------------------------------ 10: --workers
def test_workers_are_capped_at_the_cores_and_said(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    long_indexed_video(str(raw / "vid.mp4"), 4, 10)
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "a,vid,0,1,train\na,vid,1,2,train\n")
    r = _run("--annotations", ann, "--source", raw, "--output", tmp_path / "out", "--workers", 1000)
    assert r.returncode == 0, r.stdout + r.stderr
    cores = len(os.sched_getaffinity(0))
    used = min(cores, 2)
    assert r.stdout.splitlines()[0].startswith(f"--workers 1000: using {used} (this machine has {cores} usable cores")
    assert f"{used} workers:" in r.stdout


# ------------------------------------------------------------------------- 11: report names
@pytest.mark.parametrize("name", ["failed.csv", "classes.txt"])
def test_annotation_named_like_a_report_is_refused(tmp_path, name):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_indexed_video(str(raw / "vid.mp4"), 30, 10, 160, 96)
    ann = tmp_path / name
    ann.write_text(HEADER + "walking,vid,0,2,train\n")
    out = tmp_path / "out"
    line = _one_line_error(_run("--annotations", ann, "--source", raw, "--output", out))
    assert f"its clean copy would be {out / name}" in line and "rename the annotation file" in line
    assert not os.path.exists(out / name)


# ---------------------------------------------------------------- 12: folder input layout
def test_videos_outside_class_folders_are_listed(tmp_path):
    root = tmp_path / "val"
    (root / "walking" / "extra" / "deeper").mkdir(parents=True)
    make_indexed_video(str(root / "walking" / "a.mp4"), 10, 10, 160, 96)
    make_indexed_video(str(root / "walking" / "extra" / "b.mp4"), 10, 10, 160, 96)
    make_indexed_video(str(root / "walking" / "extra" / "deeper" / "d.webm"), 10, 10, 160, 96, "libvpx")
    make_indexed_video(str(root / "c.mp4"), 10, 10, 160, 96)
    (root / "README.txt").write_text("notes\n")
    out = tmp_path / "out"
    r = _run("--annotations", root, "--output", out, "--workers", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.listdir(out / "val" / "walking") == ["a.mp4"]
    failed = sorted((os.path.relpath(row[0], root), row[1]) for row in _failed(out))
    assert failed == [("c.mp4", "not in a class folder"), ("walking/extra/b.mp4", "not in a class folder"),
                      ("walking/extra/deeper/d.webm", "not in a class folder")]
    assert "not in a class folder 3" in r.stdout


# ------------------------------------------------------------------ 14: list lines blamed right
def test_a_non_video_list_line_is_blamed_not_the_video_line(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    make_indexed_video(str(raw / "vid1.mp4"), 10, 10, 160, 96)
    (raw / "vid1.txt").write_text("notes about vid1\n")
    lst = tmp_path / "val.txt"
    lst.write_text("vid1.mp4 0\nvid1.txt 0\n\fgone.mp4 0\n")
    out = tmp_path / "out"
    r = _run("--annotations", lst, "--source", raw, "--output", out, "--workers", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    failed = [(row[3], row[1]) for row in _failed(out)]
    assert failed == [(f"{lst}:2", "wrong extension"), (f"{lst}:3", "missing")], failed
    assert open(out / "val.txt").read() == "val/0/vid1.mp4 0\n"


# ----------------------------------------------------------------------- 7: display rotation
def test_display_rotation_is_applied_as_decord_and_players_show_it(tmp_path):
    import decord

    root = tmp_path / "phone"
    (root / "waving").mkdir(parents=True)
    src = str(root / "waving" / "clip.mp4")
    rotated_video(src)
    shown = decord.VideoReader(src)[0].asnumpy()  # decord applies the display matrix: 160 high, 96 wide
    assert shown.shape == (160, 96, 3)
    out = tmp_path / "out"
    r = _run("--annotations", root, "--output", out, "--workers", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    written = str(out / "phone" / "waving" / "clip.mp4")
    got = decord.VideoReader(written)[0].asnumpy()
    assert got.shape == shown.shape and np.abs(got.astype(int) - shown).mean() < 4
    with av.open(written) as c:  # upright pixels, no display matrix left to apply twice
        frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (96, 160) and frame.rotation == 0
    assert "1 videos had a display rotation (phone video): turned upright" in r.stdout


def test_pyav_fallback_reads_a_rotated_video_as_decord_does(tmp_path):
    from videoattn.data.decoding import open_video

    src = str(tmp_path / "clip.mp4")
    rotated_video(src)
    frames = {}
    for backend in ("decord", "pyav"):
        video = open_video(src, backend=backend)
        try:
            frames[backend] = video.get_frames([0, 5]).numpy()
        finally:
            video.close()
    assert frames["pyav"].shape == frames["decord"].shape == (2, 160, 96, 3)
    assert np.abs(frames["pyav"].astype(int) - frames["decord"]).mean() < 4


# ------------------------------------------- 3 (prepare_data's part): a user's file at an output path
def test_a_file_it_did_not_write_is_kept_and_listed(tmp_path):
    """A file at an output path that the manifest never named is the user's: kept byte for byte, one
    failed.csv row, the other rows prepared. A claimed output (killed between rename and record) is
    still the tool's own and is redone."""
    src, out = tmp_path / "raw", tmp_path / "ds"
    src.mkdir()
    for vid in ("mine", "theirs"):
        make_indexed_video(str(src / f"{vid}.mp4"), 20, 10, 160, 96)
    ann = tmp_path / "train.csv"
    ann.write_text(HEADER + "walking,mine,0,2,train\nwalking,theirs,0,2,train\n")
    user_file = out / "train" / "walking" / "theirs_000000_000002.mp4"
    user_file.parent.mkdir(parents=True)
    user_file.write_bytes(b"the user's own video")
    r = _run("--annotations", ann, "--source", src, "--output", out)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert user_file.read_bytes() == b"the user's own video"
    assert [(row[1], str(user_file) in row[2]) for row in _failed(out)] == [("output exists", True)]
    assert list(load_manifest(str(out))) == ["train/walking/mine_000000_000002.mp4"]
    # a run killed after the worker renamed its output into place but before the record: claimed only
    claimed = out / "train" / "walking" / "mine_000000_000002.mp4"
    lines = (out / ".prepare_manifest.jsonl").read_text().splitlines()
    (out / ".prepare_manifest.jsonl").write_text("".join(l + "\n" for l in lines if '"claimed"' in l))
    r = _run("--annotations", ann, "--source", src, "--output", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(load_manifest(str(out))) == ["train/walking/mine_000000_000002.mp4"] and claimed.stat().st_size > 0
    assert user_file.read_bytes() == b"the user's own video"
