"""Annotation formats: Kinetics CSV (flat and per-label layouts), PySlowFast lists, class folders;
malformed lines fail with file:line; missing files are reported, not fatal."""
import logging
import os

import pytest

from data_helpers import copy_root, small_cfg
from videoattn.data import AnnotationError, read_annotations
from videokit import dataset_for, loader_for
from videoattn.data.annotations import clear_index_cache


def _rel(videos, root):
    return sorted((os.path.basename(p), label) for p, label in videos)


def _txt_truth(root, split):
    """(file name, label) from the PySlowFast list and names from classes.txt, read independently."""
    classes = open(os.path.join(root, "classes.txt")).read().split("\n")[:-1]
    rows = [line.rsplit(" ", 1) for line in open(os.path.join(root, f"{split}.txt")).read().splitlines()]
    return classes, sorted((os.path.basename(p), int(l)) for p, l in rows)


@pytest.mark.parametrize("split", ["train", "val"])
def test_kinetics_csv_flat_layout_matches_list_and_classes(synthetic_root, split):
    classes, truth = _txt_truth(synthetic_root, split)
    ann = read_annotations(synthetic_root, f"{split}.csv", "train.csv", split=split)
    assert ann.format == "kinetics_csv" and not ann.missing
    assert ann.classes == sorted(classes)          # sorted training labels
    assert _rel(ann.videos, synthetic_root) == truth
    lst = read_annotations(synthetic_root, f"{split}.txt", "train.txt", "classes.txt", split=split)
    assert lst.format == "list" and lst.classes == classes
    assert _rel(lst.videos, synthetic_root) == truth
    assert all(os.path.isfile(p) for p, _ in lst.videos)


def test_kinetics_csv_per_label_folders_and_class_folders(synthetic_root, tmp_path):
    classes, truth = _txt_truth(synthetic_root, "train")
    root = tmp_path / "bylabel"
    for name, label in truth:  # <root>/train/<label>/<file>: the "one folder per label" download layout
        folder = root / "train" / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(synthetic_root, "train", name), folder / name)
    (root / "train.csv").write_text(open(os.path.join(synthetic_root, "train.csv")).read())
    clear_index_cache()
    ann = read_annotations(str(root), "train.csv", "train.csv", split="train")
    assert _rel(ann.videos, root) == truth and not ann.missing
    assert all(classes[label] == os.path.basename(os.path.dirname(p)) for p, label in ann.videos)
    folders = read_annotations(str(root), "train", "train", split="train")   # a folder per class
    assert folders.format == "folders" and folders.classes == sorted(classes)
    assert _rel(folders.videos, root) == truth


def test_is_cc_column_and_classes_file(synthetic_root, tmp_path):
    lines = open(os.path.join(synthetic_root, "val.csv")).read().splitlines()
    text = "\n".join([lines[0] + ",is_cc"] + [l + ",0" for l in lines[1:]]) + "\n"
    (tmp_path / "val_cc.csv").write_text(text)
    (tmp_path / "classes.txt").write_text("".join(reversed(open(os.path.join(synthetic_root, "classes.txt")).readlines())))
    ann = read_annotations(synthetic_root, str(tmp_path / "val_cc.csv"), "train.csv", str(tmp_path / "classes.txt"))
    assert ann.classes == [l.strip() for l in open(tmp_path / "classes.txt")]   # file order, not sorted
    assert ann.classes != sorted(ann.classes)
    truth = {row.split(",")[1]: row.split(",")[0] for row in lines[1:]}
    assert len(ann.videos) == len(truth)
    for path, label in ann.videos:
        assert ann.classes[label] == truth[os.path.basename(path)[:11]]


@pytest.mark.parametrize("content, fmt, message", [
    ("label,youtube_id,time_start,time_end,split\nmoving up,abc,1,11\n", "csv", "expected 5 columns"),
    ("label,youtube_id,time_start,time_end,split\ndancing,abc,1,11,train\n", "csv", "unknown label 'dancing'"),
    ("label,youtube_id,time_start,time_end,split\nmoving up,abc,one,11,train\n", "csv", "must be numbers"),
    ("train/a.mp4 1\ntrain/b.mp4 x\n", "txt", "is not an integer"),
    ("train/a.mp4 1\ntrain/b.mp4\n", "txt", "expected '<path> <label index>'"),
    ("train/a.mp4 1\ntrain/b.mp4 99\n", "txt", "out of range"),
])
def test_malformed_line_fails_with_file_and_line(synthetic_root, tmp_path, content, fmt, message):
    path = tmp_path / f"bad.{fmt}"
    path.write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_annotations(synthetic_root, str(path), "train.csv", "classes.txt")
    bad_line = content.splitlines()[-1]
    assert f"{path}:2:" in str(e.value) and message in str(e.value) and bad_line in str(e.value)


def test_missing_files_are_counted_reported_and_not_fatal(synthetic_root, tmp_path, caplog):
    root = copy_root(synthetic_root, str(tmp_path / "root"))
    clear_index_cache()
    rows = open(os.path.join(root, "train.csv")).read().splitlines()
    gone = [rows[1], rows[4], rows[7]]
    for row in gone:
        stem = "{1}_{2:06d}_{3:06d}".format(*[int(c) if c.isdigit() else c for c in row.split(",")[:4]])
        [os.remove(os.path.join(root, "train", f)) for f in os.listdir(os.path.join(root, "train")) if f.startswith(stem)]
    out = tmp_path / "out"
    cfg = small_cfg(root, str(out))
    with caplog.at_level(logging.WARNING):
        ds = dataset_for(cfg, "train")
    assert len(ds.missing) == 3 and len(ds.videos) == len(rows) - 1 - 3
    announced = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(announced) == 1 and " 3 of " in announced[0].getMessage()
    report = (out / "missing_videos_train.txt").read_text()
    for row in gone:
        assert row.split(",")[1] in report
    assert all(f"train.csv:{i}:" in report for i in (2, 5, 8))
    batches = list(loader_for(cfg, "train", ds))     # an epoch runs on the remaining videos
    assert sum(b["clip"].shape[0] for b in batches) == len(ds.videos) // 4 * 4


def test_utf8_bom_as_spreadsheets_save_it(synthetic_root, tmp_path):
    """Kinetics CSV, PySlowFast list and class list saved with a UTF-8 byte-order mark read as without."""
    for name in ("val.csv", "val.txt", "classes.txt", "train.csv"):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + open(os.path.join(synthetic_root, name), "rb").read())
    plain = read_annotations(synthetic_root, "val.csv", "train.csv", "classes.txt", split="val")
    for split_file, classes_file in (("val.csv", ""), ("val.csv", "classes.txt"), ("val.txt", "classes.txt")):
        bom = read_annotations(synthetic_root, str(tmp_path / split_file), str(tmp_path / "train.csv"),
                               str(tmp_path / classes_file) if classes_file else "", split="val")
        assert sorted(bom.videos) == sorted(plain.videos) and bom.classes == plain.classes and not bom.missing


def test_kinetics_header_missing_a_column_is_named(synthetic_root, tmp_path):
    path = tmp_path / "val.csv"
    path.write_text("label,youtube_id,time_start\nmoving up,abc,1\n")
    with pytest.raises(AnnotationError) as e:
        read_annotations(synthetic_root, str(path), "train.csv", "classes.txt")
    assert str(e.value).startswith(f"{path}:1: Kinetics CSV header without column(s) time_end")
    path.write_text("youtube_id,start,end,label\nabc,1,11,moving up\n")
    with pytest.raises(AnnotationError, match=f"{path}:1: .*without column\\(s\\) time_start, time_end"):
        read_annotations(synthetic_root, str(path), "train.csv", "classes.txt")


def test_duplicate_rows_count_once_with_one_warning(synthetic_root, tmp_path, caplog):
    lines = open(os.path.join(synthetic_root, "val.csv")).read().splitlines()
    rows = lines[1:]
    dup = [lines[0]] + rows + [rows[3], rows[0], rows[3]]              # lines 18, 19, 20 repeat 5, 2, 5
    (tmp_path / "val.csv").write_text("\n".join(dup) + "\n")
    with caplog.at_level(logging.WARNING):
        ann = read_annotations(synthetic_root, str(tmp_path / "val.csv"), "train.csv", "classes.txt", split="val")
    plain = read_annotations(synthetic_root, "val.csv", "train.csv", "classes.txt", split="val")
    assert ann.videos == plain.videos and len(ann.duplicates) == 3
    assert f"val.csv:{len(rows) + 2}:" in ann.duplicates[0] and "(as line 5)" in ann.duplicates[0]
    warned = [r.getMessage() for r in caplog.records if "duplicate" in r.getMessage()]
    assert len(warned) == 1 and "3 duplicate rows ignored" in warned[0]
    lst = open(os.path.join(synthetic_root, "val.txt")).read().splitlines()
    (tmp_path / "val.txt").write_text("\n".join(lst + ["./" + lst[2]]) + "\n")    # same file, other spelling
    ann = read_annotations(synthetic_root, str(tmp_path / "val.txt"), "train.txt", "classes.txt", split="val")
    assert len(ann.videos) == len(lst) and len(ann.duplicates) == 1


def test_one_video_with_two_labels_names_both_lines(synthetic_root, tmp_path):
    lst = open(os.path.join(synthetic_root, "val.txt")).read().splitlines()
    path, label = lst[1].rsplit(" ", 1)
    (tmp_path / "val.txt").write_text("\n".join(lst + [f"{path} {(int(label) + 1) % 8}"]) + "\n")
    with pytest.raises(AnnotationError) as e:
        read_annotations(synthetic_root, str(tmp_path / "val.txt"), "train.txt", "classes.txt", split="val")
    assert str(e.value).startswith(f"{tmp_path / 'val.txt'}:{len(lst) + 1}: ") and "val.txt:2" in str(e.value)


def test_labels_not_needed_for_a_list_of_videos(synthetic_root, tmp_path):
    lines = open(os.path.join(synthetic_root, "val.csv")).read().splitlines()
    (tmp_path / "any.csv").write_text("\n".join([lines[0]] + [",".join(["not a class"] + l.split(",")[1:])
                                                             for l in lines[1:]]) + "\n")
    with pytest.raises(AnnotationError, match="unknown label 'not a class'"):
        read_annotations(synthetic_root, str(tmp_path / "any.csv"), "train.csv", "classes.txt")
    ann = read_annotations(synthetic_root, str(tmp_path / "any.csv"), "no_such_train.csv", "", labels=False)
    assert len(ann.videos) == len(lines) - 1 and {label for _, label in ann.videos} == {-1}


def test_symlink_cycle_under_root_is_walked_once(synthetic_root, tmp_path, caplog):
    root = copy_root(synthetic_root, str(tmp_path / "root"))
    os.symlink("..", os.path.join(root, "train", "up"))              # root/train/up -> root: a cycle
    os.symlink(os.path.join(root, "val"), os.path.join(root, "val_again"))   # a second link to one folder
    clear_index_cache()
    with caplog.at_level(logging.WARNING):
        ann = read_annotations(root, "train.csv", "train.csv", split="train")
    assert len(ann.videos) == 24 and not ann.missing
    assert all("/up/" not in p and "val_again" not in p for p, _ in ann.videos)
    warned = [r.getMessage() for r in caplog.records if "symlink cycle" in r.getMessage()]
    assert len(warned) == 1 and os.path.join(root, "train", "up") in warned[0] and "1 more" in warned[0]


def test_classes_file_kinetics400_is_the_shipped_list(tmp_path):
    """``data.classes_file: kinetics400`` (configs/kinetics400) numbers labels by the shipped
    400-name list, whatever subset the split holds; the list is mmaction2's label_map_k400 order
    (alphabetical, as PySlowFast and pytorchvideo number Kinetics-400)."""
    from videoattn.utils.resources import kinetics400_classes

    names = kinetics400_classes()
    assert len(names) == 400 == len(set(names)) and names == sorted(names)
    for name in ("abseiling", "yoga", "zumba"):
        (tmp_path / f"{name}_000000_000010.mp4").write_bytes(b"")   # only the names matter here
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                      "zumba,zumba,0,10,val\nabseiling,abseiling,0,10,val\nyoga,yoga,0,10,val\n")
    clear_index_cache()
    ann = read_annotations(str(tmp_path), "val.csv", "train.csv", "kinetics400", "val")
    assert ann.classes == names
    assert [label for _, label in ann.videos] == [399, 0, 398]
