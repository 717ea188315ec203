"""A Kinetics-like download for ``tools/benchmark.py data``: raw clips as the downloader leaves
them, and their prepared copies (``tools/prepare_data.py``'s library), with the cost of preparing.

Raw clips: ``<id>_000000_<seconds:06d>.mp4`` at 640x360 (360p, the low end of Kinetics) and
30 fps, H.264 with libx264's defaults (preset medium, crf 23, keyframe interval 250 with scene
cuts, B-frames): what an ffmpeg cut of a YouTube download leaves. Content: a textured background
panning a few pixels per frame, a moving object and a little sensor noise per frame, so that
P/B-frames carry motion and residuals (a static background would make them nearly free to decode).
Also written: ``train.csv`` (Kinetics CSV), ``train.txt`` (``<path> <label>`` for pytorchvideo) and
``classes.txt``.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import List

import av
import numpy as np

RAW_X264 = {"threads": "1"}  # everything else: libx264's defaults (medium, crf 23, keyint 250)
CLASSES = ["class_a", "class_b", "class_c", "class_d"]


def _frames(n: int, width: int, height: int, rng: np.random.Generator):
    """``n`` RGB frames (H, W, 3) uint8: a smooth random texture panning 2 px/frame, a moving disc, noise."""
    pad = 2 * n + 8
    coarse = rng.integers(0, 256, size=((height + pad) // 8 + 2, (width + pad) // 8 + 2, 3)).astype(np.float32)
    texture = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)  # 8-px blocks, softened below
    texture = (texture + np.roll(texture, 4, 0) + np.roll(texture, 4, 1) + np.roll(texture, (4, 4), (0, 1))) / 4
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    colour = rng.integers(0, 256, size=3).astype(np.float32)
    r = height * rng.uniform(0.12, 0.2)
    for i in range(n):
        dx = dy = 2 * i
        img = texture[dy // 2 : dy // 2 + height, dx : dx + width].copy()
        cx = width * (0.2 + 0.6 * i / max(1, n - 1))
        cy = height * (0.5 + 0.2 * np.sin(i / 15))
        mask = np.clip(r - np.hypot(xx - cx, yy - cy), 0, 1)[..., None]
        img = img * (1 - mask) + colour * mask + rng.normal(0, 3, size=(height, width, 1))
        yield np.clip(img, 0, 255).astype(np.uint8)


def write_raw_clip(path: str, seconds: float, width: int, height: int, fps: int, seed: int) -> None:
    """One raw clip (see the module docstring), written atomically."""
    tmp = path + ".tmp.mp4"
    rng = np.random.default_rng(seed)
    with av.open(tmp, "w") as out:
        stream = out.add_stream("libx264", rate=fps, options=dict(RAW_X264))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in _frames(int(round(seconds * fps)), width, height, rng):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    os.replace(tmp, path)


def make_raw_set(
    root: str, videos: int, seconds: float, width: int = 640, height: int = 360, fps: int = 30
) -> List[str]:
    """Write ``videos`` raw clips and the annotation files under ``root`` (kept if already there)."""
    os.makedirs(os.path.join(root, "train"), exist_ok=True)
    rows, paths = [], []
    for i in range(videos):
        label = CLASSES[i % len(CLASSES)]
        stem = f"vid{i:04d}_000000_{int(round(seconds)):06d}"
        path = os.path.join(root, "train", stem + ".mp4")
        if not os.path.exists(path):
            write_raw_clip(path, seconds, width, height, fps, seed=i)
        rows.append((label, stem))
        paths.append(path)
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("label,youtube_id,time_start,time_end,split\n")
        f.writelines(f"{label},{stem.split('_')[0]},0,{int(round(seconds))},train\n" for label, stem in rows)
    with open(os.path.join(root, "train.txt"), "w") as f:
        f.writelines(f"{p} {CLASSES.index(label)}\n" for p, (label, _) in zip(paths, rows))
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.writelines(c + "\n" for c in CLASSES)
    return paths


@dataclass
class Preparation:
    videos: int
    wall_s: float
    cpu_s: float  # the worker processes' user + system time
    workers: int
    mb_raw: float
    mb_prepared: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _megabytes(folder: str) -> float:
    return (
        sum(os.path.getsize(os.path.join(d, n)) for d, _, files in os.walk(folder) for n in files if n.endswith(".mp4"))
        / 1e6
    )


def prepare_set(
    raw: str, out: str, gop: int, workers: int, short_side: int = 320, cabac: bool = False, b_pyramid: bool = False
) -> Preparation:
    """Run prepare_data's library on the raw set (already cut: kept whole, scaled, re-encoded with a
    keyframe every ``gop`` frames, CAVLC unless ``cabac``, unreferenced B-frames unless ``b_pyramid``)
    into ``out``; a ``train.txt`` list for pytorchvideo is added."""
    from videoattn.datasets.prepare_run import PrepareOptions, run_prepare

    cpu0, t0 = _children_cpu(), time.perf_counter()
    opts = PrepareOptions(
        [os.path.join(raw, "train.csv")],
        raw,
        out,
        short_side=short_side,
        gop=gop,
        classes=os.path.join(raw, "classes.txt"),
        workers=workers,
        progress=False,
        cabac=cabac,
        b_pyramid=b_pyramid,
    )
    lines: List[str] = []
    if run_prepare(opts, echo=lines.append) != 0:
        raise RuntimeError("prepare_data failed:\n" + "\n".join(lines))
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0  # the pool joins its workers: their time counts
    prepared = sorted(
        os.path.join(d, n)
        for d, _, files in os.walk(out)
        for n in files
        if n.endswith(".mp4") and not n.startswith(".")
    )
    label_of = {os.path.splitext(os.path.basename(p))[0]: p.split(os.sep)[-2] for p in prepared}
    with open(os.path.join(out, "train.txt"), "w") as f:
        f.writelines(f"{p} {CLASSES.index(label_of[os.path.splitext(os.path.basename(p))[0]])}\n" for p in prepared)
    return Preparation(len(prepared), wall, cpu, workers, _megabytes(raw), _megabytes(out))
