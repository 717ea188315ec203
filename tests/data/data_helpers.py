"""Helpers for the data tests: configs over a dataset root, broken files, patched containers."""
from __future__ import annotations

import shutil
import struct

import numpy as np

from videoattn.config.loader import load_config

SMALL = ["data.num_frames=4", "data.sampling_rate=4", "data.train_jitter_scales=[40,48]",
         "data.train_crop_size=32", "data.test_crop_size=32", "data.num_workers=0",
         "train.batch_size=4", "test.batch_size=4", "test.num_ensemble_views=2", "test.num_spatial_crops=3",
         "data.decode_timeout=20"]


def small_cfg(root: str, output_dir: str, *overrides: str):
    return load_config(None, SMALL + [f"data.root={root}", f"output_dir={output_dir}", *overrides])


def copy_root(src: str, dst: str) -> str:
    shutil.copytree(src, dst)
    return dst


def make_broken(path: str, kind: str, good_video: str) -> None:
    """Overwrite ``path`` with a broken file: empty | truncated | text | zero_frames."""
    if kind == "empty":
        open(path, "wb").close()
    elif kind == "truncated":
        data = open(good_video, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    elif kind == "text":
        open(path, "w").write("this is not a video\n" * 50)
    elif kind == "zero_frames":  # a valid container header with a video stream and no frames
        import av
        with av.open(path, "w", format="mp4") as out:
            s = out.add_stream("mpeg4", rate=25)
            s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
            out.start_encoding()
    else:
        raise ValueError(kind)


def patch_avi_frame_count(src: str, dst: str, count: int) -> None:
    """Copy an AVI, claiming ``count`` frames in its main and stream headers (over-reporting)."""
    data = bytearray(open(src, "rb").read())
    avih = data.find(b"avih")
    data[avih + 8 + 16: avih + 8 + 20] = struct.pack("<I", count)   # dwTotalFrames
    strh = data.find(b"strh")
    data[strh + 8 + 32: strh + 8 + 36] = struct.pack("<I", count)   # dwLength
    open(dst, "wb").write(bytes(data))


def frame_indices(frames) -> list:
    from videoattn.datasets.synthetic import read_frame_index
    return [read_frame_index(f) for f in np.asarray(frames)]
