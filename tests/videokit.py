"""Test helpers shared by tests/data and tests/engine: damaged copies of real videos, an
independent count of the frames that decode, and skewed training splits of the synthetic set (not
part of the library)."""

import csv
import os
from typing import Sequence

import av

from videoattn.datasets.synthetic import read_frame_index


def cut_file(src: str, dst: str, fraction: float) -> None:
    """Copy the first ``fraction`` of the bytes of ``src`` to ``dst``: a download cut short."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def decodable_indexed_frames(path: str) -> int:
    """How many frames of an indexed video (:func:`make_indexed_video`) decode, counted plainly:
    every packet through PyAV's decoder (errors skipped), then the first index whose barcode never
    shows. A reference for tests of the readers (independent of :mod:`videoattn.data.decoding`)."""
    seen = set()
    with av.open(path) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                seen.update(read_frame_index(f.to_ndarray(format="rgb24")) for f in stream.codec_context.decode(packet))
            except av.error.FFmpegError:
                pass
    n = 0
    while n in seen:
        n += 1
    return n


def write_skewed_split(synthetic_root: str, path: str, per_class: Sequence[int]) -> str:
    """A Kinetics CSV at ``path`` whose training videos are the first ``per_class[c]`` videos of
    class c (``classes.txt`` order) of the ``synthetic_root`` set, its train videos then its val
    ones (the fixture has 3 + 2 per class): an imbalanced training split of real files."""
    rows = []
    for split in ("train", "val"):
        with open(os.path.join(synthetic_root, f"{split}.csv"), newline="") as f:
            rows += list(csv.DictReader(f))
    with open(os.path.join(synthetic_root, "classes.txt")) as f:
        want = dict(zip([line.strip() for line in f if line.strip()], per_class))
    keep = []
    for row in rows:
        if want.get(row["label"], 0) > 0:
            want[row["label"]] -= 1
            keep.append({**row, "split": "train"})
    if any(want.values()):
        raise ValueError(f"the set has too few videos for {per_class}")
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)
    return path


def dataset_for(cfg, split: str):
    """``build_dataset`` for ``split`` with the config's test views, as the tools call it."""
    from videoattn.data import build_dataset

    return build_dataset(
        cfg.data, split, cfg.test.num_ensemble_views, cfg.test.num_spatial_crops, report_dir=cfg.output_dir
    )


def loader_for(cfg, split: str, dataset=None):
    """``build_loader`` with the per-process batch of ``train.batch_size`` (``test.batch_size`` for test)."""
    from videoattn.data import build_loader
    from videoattn.utils.distributed import per_process_batch, resolve_device

    dataset = dataset if dataset is not None else dataset_for(cfg, split)
    key = "test.batch_size" if split == "test" else "train.batch_size"
    batch = cfg.test.batch_size if split == "test" else cfg.train.batch_size
    return build_loader(dataset, cfg.data, per_process_batch(batch, key), cfg.seed, resolve_device(cfg.device))


def make_long_video(
    path: str, labels, frames_each: int, fps: int = 30, width: int = 160, height: int = 120, seed: int = 0
) -> str:
    """A real video of synthetic actions one after the other: ``frames_each`` frames of each class
    in ``labels`` (:func:`videoattn.datasets.synthetic.render_video`), encoded at ``fps``."""
    import numpy as np

    from videoattn.datasets.synthetic import encode_video, render_video

    rng = np.random.default_rng(seed)
    frames = np.concatenate([render_video(label, frames_each, width, height, rng) for label in labels])
    encode_video(path, frames, fps)
    return path


def rotated_video(path, n=10, width=160, height=96, degrees=-90):
    """A phone-style video: frames stored ``width`` x ``height`` with a display matrix of ``degrees``;
    a white block at the stored top-right corner (shown at the bottom right)."""
    import numpy as np

    with av.open(path, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=10, options={"preset": "ultrafast", "threads": "1"})
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.set_display_rotation(degrees)
        for _ in range(n):
            img = np.zeros((height, width, 3), np.uint8)
            img[:24, -40:] = 255
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
