"""tools/prepare_data.py runs on a messy download: bad rows and files, reruns, SIGKILL, hangs, a full disk."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest

from data_helpers import make_broken
from prepare_helpers import (decoded_indices, enospc_or_prepare, hang_or_prepare, long_indexed_video, video_with_audio,
                             zero_frame_video)
from videoattn.data.annotations import clear_index_cache, read_annotations
from videoattn.datasets.prepare_run import PrepareOptions, load_manifest, output_lock, run_prepare
from videoattn.datasets.synthetic import make_indexed_video

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLASSES = ["jumping", "running", "walking"]
GOOD = {  # train.csv rows that must come out, -> (output, first source frame, frames)
    2: ("train/walking/vidA_000002_000005.mp4", 60, 90),
    3: ("train/running/vidA_000010_000013.mp4", 300, 90),
    4: ("train/running/vidB_000003_000006.mp4", 75, 75),
    5: ("train/jumping/vidC_000005_000015.mp4", 0, 100),
}
BAD = {  # line -> reason in failed.csv
    6: "unreadable", 7: "unreadable", 8: "no video stream", 9: "wrong extension", 10: "zero frames",
    11: "span past the end", 12: "bad row", 13: "duplicate", 14: "bad row", 15: "missing", 16: "bad row",
}
TRAIN_CSV = """label,youtube_id,time_start,time_end,split,is_cc
walking,vidA,2,5,train,0
running,vidA,10,13,train,0
running,vidB,3,6,train,0
jumping,vidC,5,15,train,1
walking,vidE,0,10,train,0
walking,vidT,0,10,train,0
walking,vidS,0,10,train,0
walking,vidW,0,10,train,0
walking,vidZ,0,10,train,0
walking,vidA,18,22,train,0
walking,vidA,-1,2,train,0
walking,vidA,2,5,train,0
dancing,vidA,0,2,train,0
walking,vidM,0,10,train,0
walking,vidA,abc,5,train,0
"""


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """A Kinetics-like download: full-length and already-cut videos in nested folders, broken files,
    a symlink cycle, a CSV with a UTF-8 BOM."""
    root = tmp_path_factory.mktemp("download")
    raw = root / "raw"
    for sub in ("aa", "bb", "cut", "junk"):
        (raw / sub).mkdir(parents=True)
    long_indexed_video(str(raw / "aa" / "vidA.mp4"), 20, 30)
    make_indexed_video(str(raw / "bb" / "vidB.mkv"), 300, 25, 160, 96, "libx264", {"preset": "ultrafast", "threads": "1"})
    make_indexed_video(str(raw / "cut" / "vidC_000005_000015.mp4"), 100, 10, 160, 96)
    make_broken(str(raw / "junk" / "vidE.mp4"), "empty", "")
    make_broken(str(raw / "junk" / "vidT.mp4"), "text", "")
    zero_frame_video(str(raw / "junk" / "vidZ.mp4"))
    video_with_audio(str(raw / "junk" / "vidS.mp4"), audio_only=True)
    (raw / "junk" / "vidW.mp4.part").write_bytes(b"\0" * 100)
    os.symlink(str(raw), str(raw / "aa" / "loop"))  # a cycle: raw/aa/loop/aa/loop/...
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + TRAIN_CSV.encode())
    (root / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nrunning,vidB,0,2,val\n")
    (root / "classes.txt").write_text("".join(c + "\n" for c in CLASSES))
    return root


def _options(download, out, **kw):
    return PrepareOptions([str(download / "train.csv"), str(download / "val.csv")], str(download / "raw"), str(out),
                          short_side=96, gop=16, classes=str(download / "classes.txt"), progress=False, **kw)


def _mp4s(out):
    return sorted(os.path.relpath(os.path.join(d, n), out) for d, _, files in os.walk(out) for n in files
                  if not n.startswith(".") and n.endswith(".mp4"))


def _temporaries(out):
    return [n for _, _, files in os.walk(out) for n in files if n.endswith(".tmp")]


def test_messy_download_good_rows_out_bad_rows_reported_rerun_skips(download, tmp_path):
    out = tmp_path / "prepared"
    lines = []
    assert run_prepare(_options(download, out, workers=2), echo=lines.append) == 0
    assert _mp4s(out) == sorted([g[0] for g in GOOD.values()] + ["val/running/vidB_000000_000002.mp4"])
    for rel, first, n in GOOD.values():
        assert decoded_indices(str(out / rel)) == list(range(first, first + n)), rel
    failed = {int(r[3].rsplit(":", 1)[1]): r[1] for r in _rows(out / "failed.csv")[1:]}
    assert failed == BAD
    train = _rows(download / "train.csv")
    train[0][0] = train[0][0].lstrip("\ufeff")
    assert _rows(out / "train.csv") == [train[0]] + [train[line - 1] for line in sorted(GOOD)]
    assert (out / "classes.txt").read_text().split("\n")[:-1] == CLASSES
    assert not _temporaries(out)
    # the training reader finds every good row under the output folder
    clear_index_cache()
    ann = read_annotations(str(out), "train.csv", "train.csv", "classes.txt")
    assert not ann.missing and sorted(os.path.relpath(p, out) for p, _ in ann.videos) == sorted(g[0] for g in GOOD.values())
    # rerun: nothing decoded again; a damaged output is redone
    stamps = {rel: os.stat(out / rel).st_mtime_ns for rel in _mp4s(out)}
    lines.clear()
    assert run_prepare(_options(download, out, workers=1), echo=lines.append) == 0
    assert "0 prepared now, 5 already verified" in "\n".join(lines)
    assert {rel: os.stat(out / rel).st_mtime_ns for rel in _mp4s(out)} == stamps
    damaged = out / GOOD[2][0]
    damaged.write_bytes(damaged.read_bytes()[:1000])
    lines.clear()
    assert run_prepare(_options(download, out, workers=1), echo=lines.append) == 0
    assert "1 prepared now, 4 already verified" in "\n".join(lines)
    assert decoded_indices(str(damaged)) == list(range(60, 150))


def test_flat_layout_and_changed_settings_redo(download, tmp_path):
    out = tmp_path / "flat"
    opts = _options(download, out, workers=1, layout="flat")
    opts.annotations = [str(download / "val.csv")]
    assert run_prepare(opts, echo=lambda s: None) == 0
    assert _mp4s(out) == ["val/vidB_000000_000002.mp4"]
    before = load_manifest(str(out))["val/vidB_000000_000002.mp4"]
    opts.gop = 4
    lines = []
    assert run_prepare(opts, echo=lines.append) == 0
    assert "1 prepared now, 0 already verified" in "\n".join(lines)
    assert load_manifest(str(out))["val/vidB_000000_000002.mp4"]["params"] != before["params"]


@pytest.mark.slow
def _alive(pid: str) -> bool:
    """``pid`` is a running process (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_mid_run_loses_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    long_indexed_video(str(src / "vidK.mp4"), 16, 30)
    spans = [(s, s + 2) for s in range(0, 16, 2)]
    ann = tmp_path / "train.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(f"a,vidK,{s},{e},train\n" for s, e in spans))
    out = tmp_path / "out"
    cmd = [sys.executable, os.path.join(REPO, "tools", "prepare_data.py"), "--annotations", str(ann), "--source",
           str(src), "--output", str(out), "--short-side", "96", "--workers", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(load_manifest(str(out))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = load_manifest(str(out))
    assert 2 <= len(done_before) < len(spans), "the kill must land mid-run"
    for pid in children:  # the worker died with its parent (polled: a fixed 1 s wait raced a loaded machine)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"worker {pid} outlived its parent"
    for rel in _mp4s(out):  # whatever is at a final name is complete
        first = int(rel.split("_")[-2]) * 30
        assert decoded_indices(str(out / rel)) == list(range(first, first + 60))
    stamps = {rel: os.stat(out / rel).st_mtime_ns for rel in done_before}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{len(done_before)} already verified" in rerun.stdout
    assert len(_mp4s(out)) == len(spans) and not _temporaries(out)
    assert {rel: os.stat(out / rel).st_mtime_ns for rel in done_before} == stamps
    assert len(_rows(out / "train.csv")) == len(spans) + 1


@pytest.mark.slow
def test_hung_video_is_killed_and_the_run_goes_on(download, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("hang1", "okay1"):
        long_indexed_video(str(raw / f"{name}.mp4"), 3, 25)
    ann = tmp_path / "t.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\na,hang1,0,2,train\na,okay1,0,2,train\n")
    out = tmp_path / "out"
    opts = PrepareOptions([str(ann)], str(raw), str(out), short_side=96, workers=1, time_limit=20, progress=False)
    assert run_prepare(opts, echo=lambda s: None, worker=hang_or_prepare) == 0
    assert _mp4s(out) == ["train/a/okay1_000000_000002.mp4"]
    assert [r[1] for r in _rows(out / "failed.csv")[1:]] == ["time limit"]
    assert not _temporaries(out)


def test_full_disk_stops_the_run_and_keeps_what_was_verified(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("first", "full", "third"):
        long_indexed_video(str(raw / f"{name}.mp4"), 3, 25)
    ann = tmp_path / "t.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(
        f"a,{n},0,2,train\n" for n in ("first", "full", "third")))
    out = tmp_path / "out"
    opts = PrepareOptions([str(ann)], str(raw), str(out), short_side=96, workers=1, progress=False)
    lines = []
    assert run_prepare(opts, echo=lines.append, worker=enospc_or_prepare) == 2
    assert lines[-1].startswith("error: stopped: output error: ") and "No space left on device" in lines[-1]
    assert _mp4s(out) == ["train/a/first_000000_000002.mp4"] and not _temporaries(out)
    assert len(_rows(out / "t.csv")) == 2  # the clean copy lists the verified row
    lines.clear()
    assert run_prepare(opts, echo=lines.append) == 0
    assert "2 prepared now, 1 already verified" in "\n".join(lines)


@pytest.mark.slow
def test_unusable_output_folder_is_one_line(download, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cmd = [sys.executable, os.path.join(REPO, "tools", "prepare_data.py"), "--annotations", str(download / "val.csv"),
           "--source", str(download / "raw"), "--output", str(blocker / "out")]
    r = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stdout.strip().splitlines() == [f"error: output folder {blocker / 'out'} is not writable: Not a directory"]
    out = tmp_path / "busy"
    lines = []
    with output_lock(str(out)):
        assert run_prepare(_options(download, out, workers=1), echo=lines.append) == 2
    assert lines == [f"error: output folder {out} is in use by another prepare_data run"]


def _frame_count(path):
    import av

    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def test_list_and_folder_inputs_keep_whole_videos_of_any_codec(synthetic_root, tmp_path):
    classes = open(os.path.join(synthetic_root, "classes.txt")).read().splitlines()
    folders = tmp_path / "by_class" / "val"
    val = [line.split() for line in open(os.path.join(synthetic_root, "val.txt"))][:6]
    for rel, label in val:  # a folder per class, linking the synthetic val videos
        (folders / classes[int(label)]).mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(synthetic_root, rel), folders / classes[int(label)] / os.path.basename(rel))
    out = tmp_path / "out"
    opts = PrepareOptions([os.path.join(synthetic_root, "train.txt"), str(folders)], synthetic_root, str(out),
                          short_side=320, classes=os.path.join(synthetic_root, "classes.txt"), workers=2,
                          progress=False)
    assert run_prepare(opts, echo=lambda s: None) == 0
    assert _rows(out / "failed.csv") == [["path", "reason", "detail", "row"]]
    clear_index_cache()
    ann = read_annotations(str(out), "train.txt", "train.txt", "classes.txt")
    src = read_annotations(synthetic_root, "train.txt", "train.txt", "classes.txt")
    assert not ann.missing and [label for _, label in ann.videos] == [label for _, label in src.videos]
    for (p, _), (s, _) in zip(ann.videos, src.videos):  # .mp4/.webm/.avi sources, every frame kept
        assert os.path.splitext(os.path.basename(p))[0] == os.path.splitext(os.path.basename(s))[0]
        assert _frame_count(p) == _frame_count(s), s
    got = read_annotations(str(out), "val", "val", "classes.txt")
    assert sorted(os.path.basename(p) for p, _ in got.videos) == sorted(
        os.path.splitext(os.path.basename(r))[0] + ".mp4" for r, _ in val)


def test_run_level_input_errors_are_one_line(download, tmp_path):
    cases = [
        (dict(annotations=[str(tmp_path / "nope.csv")]), "annotation file or folder not found"),
        (dict(classes=str(tmp_path / "none.txt")), "--classes"),
        (dict(short_side=101), "--short-side must be an even number"),
        (dict(preset="fastest"), "--preset must be one of"),
        (dict(annotations=[str(download / "val.csv"), str(tmp_path / "copy" / "val.csv")]), "same file name"),
        (dict(annotations=[str(download / "val.csv"), str(download / "val.csv")]), "given twice"),
    ]
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "val.csv").write_text((download / "val.csv").read_text())
    for change, message in cases:
        opts = _options(download, tmp_path / "o", workers=1)
        for k, v in change.items():
            setattr(opts, k, v)
        lines = []
        assert run_prepare(opts, echo=lines.append) == 2
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_shipped_kinetics400_class_list(tmp_path):
    from videoattn.utils.resources import kinetics400_classes

    ann = tmp_path / "k.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaa,0,10,train\n"
                   "zumba,bbb,0,10,train\nnot a kinetics class,ccc,0,10,train\n")
    (tmp_path / "raw").mkdir()
    out = tmp_path / "out"
    opts = PrepareOptions([str(ann)], str(tmp_path / "raw"), str(out), classes="kinetics400", progress=False)
    assert run_prepare(opts, echo=lambda s: None) == 0
    assert (out / "classes.txt").read_text().splitlines() == kinetics400_classes()
    assert [r[1:3] for r in _rows(out / "failed.csv")[1:]] == [
        ["missing", "no aaa_000000_000010.* or aaa.* under the source folder"],
        ["missing", "no bbb_000000_000010.* or bbb.* under the source folder"],
        ["bad row", "label 'not a kinetics class' is not in the class list"]]


def test_ctrl_c_right_after_a_manifest_line_counts_that_video(tmp_path, monkeypatch):
    """Ctrl-C that lands between writing a manifest line and counting it: the interrupt line must give
    the manifest's count (fault injection: SIGINT to this process just after the second line)."""
    from videoattn.datasets import prepare_run

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("v1", "v2", "v3"):
        long_indexed_video(str(raw / f"{name}.mp4"), 2, 25)
    ann = tmp_path / "t.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(f"a,{n},0,1,train\n" for n in ("v1", "v2", "v3")))
    out = tmp_path / "out"
    real_append, written = prepare_run.append_entry, []

    def append_then_ctrl_c(handle, entry):
        real_append(handle, entry)
        written.extend([] if entry.get("claimed") else [entry])
        if len(written) == 2 and not entry.get("claimed"):
            os.kill(os.getpid(), signal.SIGINT)  # delivered before the next bytecode

    monkeypatch.setattr(prepare_run, "append_entry", append_then_ctrl_c)
    lines = []
    opts = PrepareOptions([str(ann)], str(raw), str(out), short_side=64, workers=1, progress=False)
    assert run_prepare(opts, echo=lines.append) == 130
    assert lines[-1].startswith("interrupted: ")
    assert int(lines[-1].split()[1]) == len(load_manifest(str(out))) == 2


def test_a_run_off_the_main_thread_records_its_videos(tmp_path):
    """A library caller may run prepare in a worker thread, where no signal handler can be set."""
    import threading

    raw = tmp_path / "raw"
    raw.mkdir()
    long_indexed_video(str(raw / "v1.mp4"), 2, 25)
    ann = tmp_path / "t.csv"
    ann.write_text("label,youtube_id,time_start,time_end,split\na,v1,0,1,train\n")
    out, codes = tmp_path / "out", []
    opts = PrepareOptions([str(ann)], str(raw), str(out), short_side=64, workers=1, progress=False)
    thread = threading.Thread(target=lambda: codes.append(run_prepare(opts, echo=lambda s: None)))
    thread.start()
    thread.join()
    assert codes == [0] and len(load_manifest(str(out))) == 1
