"""utils/walk.walk_files, the one directory walker (annotation index and prepare_data's source index):
symlink cycles end, a folder reached twice is listed once, excluded folders stay out however reached."""

import os

from videoattn.datasets.prepare_rows import index_sources
from videoattn.utils.walk import walk_files


def _tree(tmp_path):
    src = tmp_path / "src"
    for rel in ("a/x.mp4", "a/b/y.webm", "c/z.txt", "out/train/x_000000_000010.mp4", "a/.x.mp4.part", "zz/w.mkv"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"v")
    os.symlink(str(src), str(src / "a" / "b" / "loop"))  # a cycle back to the top
    os.symlink(str(src / "out"), str(src / "c" / "out_link"))  # the excluded folder under another name
    return src


def test_walk_lists_each_file_once_and_skips_excluded_folders(tmp_path):
    src = _tree(tmp_path)
    listed = list(walk_files(str(src)))  # out/ is reached first as c/out_link, then not again
    assert sorted(os.path.relpath(os.path.realpath(p), src) for p in listed) == [
        "a/.x.mp4.part",
        "a/b/y.webm",
        "a/x.mp4",
        "c/z.txt",
        "out/train/x_000000_000010.mp4",
        "zz/w.mkv",
    ]
    rel = sorted(os.path.relpath(p, src) for p in walk_files(str(src), exclude=[str(src / "out")]))
    assert rel == ["a/.x.mp4.part", "a/b/y.webm", "a/x.mp4", "c/z.txt", "zz/w.mkv"]
    assert list(walk_files(str(src), exclude=[str(src)])) == []


def test_prepare_source_index_leaves_out_its_output_and_hidden_files(tmp_path):
    """An output folder inside --source must not be read back as sources (its already-cut names
    would shadow the downloads), and partial downloads (.name) are no sources."""
    src = _tree(tmp_path)
    index = index_sources(str(src), exclude=(str(src / "out"),))
    assert sorted(index.videos) == ["w", "x", "y"] and index.videos["x"] == [str(src / "a" / "x.mp4")]
    assert sorted(index.others) == ["z"]
