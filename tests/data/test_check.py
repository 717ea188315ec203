"""tools/check_data.py on a copy of the synthetic set with broken and missing files (real decoding)."""
import csv
import os
import random
import subprocess
import sys

import av
import pytest

from data_helpers import SMALL, copy_root, make_broken
from videoattn.data.annotations import clear_index_cache, read_annotations

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(root, out, *args, workers=1):
    """check_data on one worker process (each is a spawned interpreter importing torch, ~2 s of CPU);
    the test with broken and missing files runs it on two."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "check_data.py"), "--config",
           os.path.join(REPO, "configs", "synthetic", "I3D_NL_CBAM_R18.yaml"), "--workers", str(workers),
           "--no-progress", "--output", str(out), *args, *SMALL, f"data.root={root}", f"output_dir={out}"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_check_reports_broken_and_missing_and_writes_a_clean_annotation(synthetic_root, tmp_path):
    root = copy_root(synthetic_root, str(tmp_path / "root"))
    train = sorted(os.listdir(os.path.join(root, "train")))
    good_mp4 = next(os.path.join(root, "train", n) for n in train if n.endswith(".mp4"))
    empty, text, gone = [os.path.join(root, "train", n) for n in [n for n in train if n != os.path.basename(good_mp4)][:3]]
    make_broken(empty, "empty", good_mp4)
    make_broken(text, "text", good_mp4)
    os.remove(gone)
    files_before = sorted(os.listdir(os.path.join(root, "train")))
    out = tmp_path / "report"
    r = _run(root, out, "--split", "train", workers=2)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "21 ok, 2 broken, 1 missing" in r.stdout and "Traceback" not in r.stderr
    rows = {row[0]: row for row in _csv(out / "check_train.csv")[1:]}
    assert rows[empty][2:4] == ["broken", "empty file"]
    assert rows[text][2] == "broken" and "cannot open" in rows[text][3]
    assert [row[2] for p, row in rows.items() if os.path.splitext(os.path.basename(gone))[0] in p] == ["missing"]
    for path, row in rows.items():  # frame counts agree with a full PyAV decode (independent reference)
        if row[2] == "ok" and path.endswith(".mp4"):
            with av.open(path) as c:
                assert int(row[5]) == sum(1 for _ in c.decode(video=0)), path
    assert sorted(os.listdir(os.path.join(root, "train"))) == files_before  # nothing deleted
    clean = out / "train_clean.csv"
    assert len(_csv(clean)) == 1 + 21
    clear_index_cache()
    ann = read_annotations(root, str(clean), "train.csv", "classes.txt")
    assert not ann.missing and len(ann.videos) == 21 and {empty, text}.isdisjoint(p for p, _ in ann.videos)


@pytest.mark.slow
def test_check_list_split_all_good(synthetic_root, tmp_path):
    out = tmp_path / "report"
    r = _run(synthetic_root, out, "--split", "val", "data.val_split=val.txt", "data.classes_file=classes.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "16 ok, 0 broken, 0 missing" in r.stdout
    assert (out / "val_clean.txt").read_text() == open(os.path.join(synthetic_root, "val.txt")).read()


@pytest.mark.slow
def test_check_bad_config_is_one_line(synthetic_root, tmp_path):
    r = _run(synthetic_root, tmp_path / "o", "--split", "val", "data.val_split=nope.csv")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope.csv" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = _run(synthetic_root, tmp_path / "o", "--split", "val", "data.val_splt=val.csv")   # a config error: 2, not 1
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "did you mean 'data.val_split'" in r.stderr


@pytest.mark.parametrize("ext", ["webm", "avi"])
def test_check_warns_about_a_header_that_declares_more_frames_than_decode(tmp_path, ext):
    """A download cut short (the header still declares 150 frames): the check reads it as training
    does (the frames decord indexed), reports the header's count from Video.declared_frames and
    warns; the complete file gets no warning. Reference counts: a plain PyAV decode of the barcodes."""
    from videokit import cut_file, decodable_indexed_frames
    from videoattn.datasets.check import CheckSettings, check_video
    from videoattn.datasets.synthetic import make_indexed_video

    full, cut = str(tmp_path / f"full.{ext}"), str(tmp_path / f"cut.{ext}")
    make_indexed_video(full, 150, 30)
    cut_file(full, cut, 0.6)
    settings = CheckSettings(str(tmp_path), "train", "", "", num_frames=4, sampling_rate=2)
    whole = check_video((full, 0, settings))
    assert (whole.status, whole.frames, whole.declared_frames, whole.warnings) == ("ok", 150, 150, [])
    short = check_video((cut, 0, settings))
    real = decodable_indexed_frames(cut)
    assert short.status == "ok" and short.declared_frames == 150 and abs(short.frames - real) <= 1 and real < 140
    assert any(w.startswith(f"header declares 150 frames, {short.frames} indexed") for w in short.warnings)


@pytest.mark.parametrize("protocol,frames,fps", [("pyslowfast", 300, 30.0), ("pyslowfast", 250, 25.0),
                                                 ("mmaction2", 300, 30.0), ("videoattn", 90, 15.0)])
def test_checked_clips_are_the_first_middle_and_last_clip_training_can_draw(protocol, frames, fps):
    from videoattn.datasets.check import CheckSettings, _clips
    from videoattn.data.protocols import ClipSpec, Protocol

    s = CheckSettings(root="", split="train", split_file="", train_split="", num_frames=8, sampling_rate=8,
                      protocol=protocol)
    first, middle, last = _clips(frames, fps, s)
    # brute force: every training draw's frames lie within [first[0], last[-1]], and draws come close to both
    p, spec = Protocol(protocol), ClipSpec(8, 8, 30.0)
    draws = [p.train_indices(frames, fps, spec, random.Random(k)) for k in range(300)]
    assert first[0] == 0 <= min(int(d[0]) for d in draws) <= 2
    assert last[-1] - 3 <= max(int(d[-1]) for d in draws) <= last[-1] <= frames - 1
    assert first[0] < middle[0] < last[0] and all(len(c) == 8 for c in (first, middle, last))


# ---------------------------------------------- issue 19: check_data never replaces a file it did not write
USER_BYTES = b"the user's own file\n"


def _one_line(r, line):
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [line], r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.slow
def test_check_refuses_to_replace_its_input_or_a_users_file_and_reruns_into_its_own_folder(synthetic_root, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    annotation = out / "check_val.csv"               # the annotation itself has the report's name
    annotation.write_bytes(open(os.path.join(synthetic_root, "val.csv"), "rb").read())
    before = annotation.read_bytes()
    r = _run(synthetic_root, out, "--split", "val", f"data.val_split={annotation}")
    _one_line(r, f"error: --output {annotation} is the input file {annotation}; not replaced: choose another --output")
    assert annotation.read_bytes() == before and sorted(os.listdir(out)) == ["check_val.csv"]

    link = out / "val_clean.csv"                      # the clean copy's name: a link to the annotation
    os.symlink(os.path.join(synthetic_root, "val.csv"), link)
    r = _run(synthetic_root, out, "--split", "val")
    _one_line(r, f"error: --output {link} is the input file {os.path.join(synthetic_root, 'val.csv')}; not replaced: "
                 f"choose another --output")
    assert os.path.islink(link) and sorted(os.listdir(out)) == ["check_val.csv", "val_clean.csv"]

    os.remove(link)
    os.remove(annotation)
    link.write_bytes(USER_BYTES)                      # a user's file of that name
    r = _run(synthetic_root, out, "--split", "val")
    _one_line(r, f"error: {link} exists and was not written by check_data; not replaced: move it away or use "
                 f"another --output")
    assert link.read_bytes() == USER_BYTES and sorted(os.listdir(out)) == ["val_clean.csv"]

    os.remove(link)
    for _ in range(2):                                # a rerun into its own folder replaces its own files
        r = _run(synthetic_root, out, "--split", "val")
        assert r.returncode == 0 and "16 ok, 0 broken, 0 missing" in r.stdout, r.stdout + r.stderr
    assert sorted(os.listdir(out)) == [".videoattn-outputs.json", "check_val.csv", "check_val_summary.txt",
                                       "val_clean.csv"]
