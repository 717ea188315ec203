"""A synthetic Kinetics-style dataset whose classes need temporal reasoning.

Every class has a *time-reversed twin*: ``moving left`` is ``moving right`` played backwards,
``growing`` is ``shrinking`` backwards, ``fading in``/``fading out``, ``rotating clockwise``/
``counterclockwise``. Both members of a pair draw the same random parameters (position, colours,
shape, speed) from the same distribution, so the set of frames of a video has exactly the same
distribution in both classes: no single frame can tell a pair apart, only their order can.

Files are real encoded videos written with PyAV (H.264 ``.mp4``, VP9 ``.webm``, MPEG-4 part 2
``.avi``) at varied resolutions, frame rates (15/25/30) and lengths, laid out like a Kinetics
download::

    out/train/<youtube_id>_<start:06d>_<end:06d>.<ext>   out/val/...
    out/train.csv, out/val.csv      Kinetics CSV: label,youtube_id,time_start,time_end,split
    out/train.txt, out/val.txt      PySlowFast lists: <path relative to out> <label index>
    out/classes.txt                 one class name per line, in label-index order

Every name is claimed first (:func:`videoattn.utils.outputs.claim_outputs`): a file of one of these
names that this tool did not write (a dataset's own ``train.csv``) is refused, not replaced.

Note: the left/right classes change meaning under a horizontal flip, so train with
``data.random_flip=false`` on this set.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import av
import numpy as np

from videoattn.utils.errors import UsageError
from videoattn.utils.io import atomic_path, atomic_write_text, make_folder
from videoattn.utils.outputs import claim_outputs

# Pairs of classes; the second member of each pair is the first one played backwards.
CLASS_PAIRS: List[Tuple[str, str, str]] = [
    ("moving right", "moving left", "translate_x"),
    ("moving down", "moving up", "translate_y"),
    ("growing", "shrinking", "scale"),
    ("fading in", "fading out", "fade"),
    ("rotating clockwise", "rotating counterclockwise", "rotate"),
]
MAX_CLASSES = 2 * len(CLASS_PAIRS)

# (extension, PyAV codec, encoder options); chosen per video with probabilities FORMAT_WEIGHTS.
FORMATS: List[Tuple[str, str, Dict[str, str]]] = [
    # rc-lookahead/mbtree off: x264's lookahead is not bit-reproducible run to run
    ("mp4", "libx264", {"preset": "veryfast", "crf": "20", "threads": "1", "rc-lookahead": "0", "mbtree": "0"}),
    ("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "crf": "30", "b": "0", "threads": "1"}),
    ("avi", "mpeg4", {"qscale": "3", "threads": "1"}),
]
FORMAT_WEIGHTS = [0.6, 0.2, 0.2]
FPS_CHOICES = [15, 25, 30]
# (width, height); all even (yuv420p); one portrait size.
SIZE_CHOICES = [(128, 96), (144, 112), (112, 112), (160, 96), (96, 128)]
# decord 0.6 fails on these frame widths ("DECORDArrayCopyFromTo: The size must exactly match");
# found by encoding every even width 16..198 (the PyAV fallback still reads such files).
DECORD_BAD_WIDTHS = (16, 24, 48, 72)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def class_names(num_classes: int) -> List[str]:
    """The first ``num_classes`` class names (pairs are kept together when num_classes is even)."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise UsageError(f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
    names = [n for a, b, _ in CLASS_PAIRS for n in (a, b)]
    return names[:num_classes]


def _pair_of(label: int) -> Tuple[str, bool]:
    """(motion kind, reversed?) of class index ``label``."""
    return CLASS_PAIRS[label // 2][2], bool(label % 2)


# ------------------------------------------------------------------------------------------ render
def _object_mask(
    yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, r: float, shape: str, angle: float
) -> np.ndarray:
    """Soft (anti-aliased) mask in [0, 1] of a disc / square / bar centred at (cx, cy) pixels."""
    dx, dy = xx - cx, yy - cy
    if shape == "disc":
        dist = np.sqrt(dx * dx + dy * dy) - r
    else:  # square or bar, rotated by ``angle``
        c, s = math.cos(angle), math.sin(angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        half_v = r if shape == "square" else r * 0.35
        dist = np.maximum(np.abs(u) - r, np.abs(v) - half_v)
    return np.clip(0.5 - dist, 0.0, 1.0)


def render_video(label: int, num_frames: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Render one video of class ``label``.

    Returns:
        frames: (T, H, W, 3) uint8.
    """
    kind, backwards = _pair_of(label)
    short = min(width, height)
    bg = rng.integers(0, 256, size=3).astype(np.float32)
    fg = rng.integers(0, 256, size=3).astype(np.float32)
    while np.abs(fg - bg).sum() < 200:  # keep the object visible
        fg = rng.integers(0, 256, size=3).astype(np.float32)
    texture = rng.normal(0.0, 6.0, size=(height, width, 1)).astype(np.float32)  # static sensor-like noise
    shape = str(rng.choice(["disc", "square"])) if kind != "rotate" else "bar"
    r = short * rng.uniform(0.10, 0.16)
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.3, 0.7)
    angle0 = rng.uniform(0, 2 * math.pi)
    span = rng.uniform(0.45, 0.6)
    t = np.linspace(0.0, 1.0, num_frames)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i, ti in enumerate(t):
        x, y, rad, alpha, ang = cx, cy, r, 1.0, angle0
        if kind == "translate_x":
            x = width * (0.5 - span / 2 + span * ti) + (cx - width / 2) * 0.3
        elif kind == "translate_y":
            y = height * (0.5 - span / 2 + span * ti) + (cy - height / 2) * 0.3
        elif kind == "scale":
            rad = short * (0.06 + 0.22 * ti)
        elif kind == "fade":
            alpha = ti
        elif kind == "rotate":
            rad, x, y = short * 0.3, width / 2, height / 2
            ang = angle0 + 1.5 * math.pi * ti  # image y points down: increasing angle turns clockwise
        m = alpha * _object_mask(yy, xx, x, y, rad, shape, ang)[..., None]
        img = bg * (1 - m) + fg * m + texture
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames[::-1].copy() if backwards else frames


# ---------------------------------------------------------------------------------- frame indexing
INDEX_BITS = 10
INDEX_CELL = 8  # pixels per barcode cell; large cells survive lossy compression


def draw_frame_index(frame: np.ndarray, index: int) -> None:
    """Draw ``index`` as a black/white barcode (INDEX_BITS cells of INDEX_CELL px) on the top rows."""
    for b in range(INDEX_BITS):
        value = 255 if (index >> b) & 1 else 0
        frame[:INDEX_CELL, b * INDEX_CELL : (b + 1) * INDEX_CELL] = value


def read_frame_index(frame) -> int:
    """Inverse of :func:`draw_frame_index` on a decoded (H, W, 3) uint8 frame (array or tensor)."""
    arr = np.asarray(frame)
    index = 0
    for b in range(INDEX_BITS):
        cell = arr[2 : INDEX_CELL - 2, b * INDEX_CELL + 2 : (b + 1) * INDEX_CELL - 2]
        if cell.mean() > 127:
            index |= 1 << b
    return index


# ---------------------------------------------------------------------------------------- encoding
def encode_video(
    path: str,
    frames: np.ndarray,
    fps: int,
    codec: Optional[str] = None,
    options: Optional[Dict[str, str]] = None,
    container_options: Optional[Dict[str, str]] = None,
) -> None:
    """Encode (T, H, W, 3) uint8 ``frames`` to ``path`` with PyAV, atomically.

    The container follows the extension; ``codec`` defaults to the one of FORMATS for it.
    """
    ext = os.path.splitext(path)[1].lstrip(".")
    if codec is None:
        codec, options = next((c, o) for e, c, o in FORMATS if e == ext)
    with atomic_path(path) as tmp:
        fmt = {"mp4": "mp4", "webm": "webm", "avi": "avi", "mkv": "matroska"}[ext]
        muxer = dict({"fflags": "+bitexact"}, **(container_options or {}))  # bitexact: no dates, same bytes
        with av.open(tmp, "w", format=fmt, options=muxer) as out:
            stream = out.add_stream(codec, rate=fps, options=dict(options or {}))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.options = dict(stream.codec_context.options, flags="+bitexact")
            try:
                stream.codec_context.open(strict=False)
            except av.error.ArgumentError as e:
                if "decord" in sys.modules and codec.startswith("libvpx"):
                    raise RuntimeError(
                        "PyAV cannot open the VP9 encoder because decord was imported before av "
                        "(their bundled FFmpeg libraries clash): import av (or videoattn.data) "
                        "before decord"
                    ) from e
                raise
            for arr in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
            out.mux(stream.encode())


# ------------------------------------------------------------------------------------------ layout
SPLITS = ("train", "val", "test")
# render(label, num_frames, width, height, rng) -> (T, H, W, 3) uint8: the contents of one video
Renderer = Callable[[int, int, int, int, np.random.Generator], np.ndarray]


def plan_videos(
    num_classes: int,
    per_class: Dict[str, int],
    seed: int,
    min_seconds: float,
    max_seconds: float,
    size_scale: float,
    sizes: Sequence[Tuple[int, int]] = SIZE_CHOICES,
) -> List[dict]:
    """Deterministic list of videos to write (everything random is drawn here, from ``seed``): per
    split of ``per_class`` (train, val, test; a split of 0 videos is left out) and class, the id,
    fps, (width, height) from ``sizes``, frame count, container, Kinetics start/end and the seed of
    the video's contents."""
    rng = np.random.default_rng(seed)
    plan, used_ids = [], set()
    for split in [s for s in SPLITS if per_class.get(s, 0) > 0]:
        for label in range(num_classes):
            for _ in range(per_class[split]):
                vid = "".join(rng.choice(list(_ID_ALPHABET), size=11))
                while vid in used_ids:
                    vid = "".join(rng.choice(list(_ID_ALPHABET), size=11))
                used_ids.add(vid)
                fps = int(rng.choice(FPS_CHOICES))
                w, h = sizes[int(rng.integers(len(sizes)))]
                if size_scale != 1.0:  # multiples of 16, avoiding widths decord 0.6 cannot decode
                    w, h = max(32, int(round(w * size_scale / 16)) * 16), max(32, int(round(h * size_scale / 16)) * 16)
                    w = w + 16 if w in DECORD_BAD_WIDTHS else w
                seconds = rng.uniform(min_seconds, max_seconds)
                ext = FORMATS[int(rng.choice(len(FORMATS), p=FORMAT_WEIGHTS))][0]
                start = int(rng.integers(0, 300))
                plan.append(
                    dict(
                        split=split,
                        label=label,
                        youtube_id=vid,
                        fps=fps,
                        width=w,
                        height=h,
                        num_frames=max(2, int(round(seconds * fps))),
                        ext=ext,
                        start=start,
                        end=start + 10,
                        seed=int(rng.integers(2**31)),
                    )
                )
    return plan


def _rel(item: dict) -> str:
    return f"{item['split']}/{item['youtube_id']}_{item['start']:06d}_{item['end']:06d}.{item['ext']}"


def _write_one(item: dict, out_dir: str, render: Renderer) -> str:
    rel = _rel(item)
    rng = np.random.default_rng(item["seed"])
    frames = render(item["label"], item["num_frames"], item["width"], item["height"], rng)
    encode_video(os.path.join(out_dir, rel), frames, item["fps"])
    return rel


def write_dataset(
    out_dir: str, generated: List[str], plan: List[dict], render: Renderer, workers: int = 0
) -> Dict[str, object]:
    """Render and encode every video of ``plan`` (:func:`plan_videos`) with ``render``, then write
    the annotations (module docstring's layout); ``generated[label]`` is the class name of a label.

    Returns:
        dict(classes=[...], train=[(rel_path, label)], val=[...], and test=[...] if planned).
    """
    names = sorted(generated)  # label indices follow the sorted names, as Kinetics' class list
    splits = [s for s in SPLITS if any(item["split"] == s for item in plan)]
    make_folder(out_dir)
    annotations = [f"{s}.{ext}" for s in splits for ext in ("csv", "txt")]
    claim_outputs(
        out_dir,
        "make_synthetic_dataset",
        ["classes.txt"] + annotations + [_rel(item) for item in plan],
        hint="use another --output",
    )
    for split in splits:
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    workers = workers or os.cpu_count() or 1
    write = functools.partial(_write_one, out_dir=out_dir, render=render)
    if workers > 1 and len(plan) > 8:
        with ThreadPoolExecutor(workers) as pool:  # PyAV encodes without the GIL
            rels = list(pool.map(write, plan, chunksize=4))
    else:
        rels = [write(item) for item in plan]

    result: Dict[str, object] = {"classes": names}
    atomic_write_text(os.path.join(out_dir, "classes.txt"), "".join(n + "\n" for n in names))
    for split in splits:
        rows = [(rel, item) for rel, item in zip(rels, plan) if item["split"] == split]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for _, item in rows:
            writer.writerow([generated[item["label"]], item["youtube_id"], item["start"], item["end"], split])
        atomic_write_text(os.path.join(out_dir, f"{split}.csv"), buf.getvalue())
        atomic_write_text(
            os.path.join(out_dir, f"{split}.txt"),
            "".join(f"{rel} {names.index(generated[item['label']])}\n" for rel, item in rows),
        )
        result[split] = [(rel, names.index(generated[item["label"]])) for rel, item in rows]
    return result


def make_synthetic_dataset(
    out_dir: str,
    num_classes: int = 8,
    train_per_class: int = 40,
    val_per_class: int = 10,
    seed: int = 0,
    min_seconds: float = 2.2,
    max_seconds: float = 3.0,
    size_scale: float = 1.0,
    workers: int = 0,
    test_per_class: int = 0,
) -> Dict[str, object]:
    """Write the dataset under ``out_dir`` (see the module docstring for the layout).

    Args:
        num_classes: 2..10; pairs of time-reversed classes.
        train_per_class / val_per_class / test_per_class: videos per class and split (balanced;
            no test split when 0).
        seed: everything (ids, sizes, fps, codecs, contents) is a function of it.
        min_seconds / max_seconds: video length range.
        size_scale: multiplies the frame sizes of SIZE_CHOICES (e.g. 0.5 for tiny test sets).
        workers: encoding threads (0: one per CPU core).
    Returns:
        dict(classes=[...], train=[(rel_path, label)], val=[...], test=[...] if any).
    """
    generated = class_names(num_classes)
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    plan = plan_videos(num_classes, per_class, seed, min_seconds, max_seconds, size_scale)
    return write_dataset(out_dir, generated, plan, render_video, workers)


def make_indexed_video(
    path: str,
    num_frames: int,
    fps: int,
    width: int = 96,
    height: int = 64,
    codec: Optional[str] = None,
    options: Optional[Dict[str, str]] = None,
    container_options: Optional[Dict[str, str]] = None,
) -> None:
    """A video whose frame i carries i as a barcode (see :func:`read_frame_index`); for seek tests.
    ``container_options``: muxer options, e.g. ``{"movflags": "+faststart"}`` (mp4 index first)."""
    rng = np.random.default_rng(num_frames)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = rng.integers(60, 200, size=(1, height, width, 3))
    for i in range(num_frames):
        frames[i, INDEX_CELL * 2 :, :] = (frames[i, INDEX_CELL * 2 :, :].astype(int) + 3 * i) % 256  # moving content
        draw_frame_index(frames[i], i)
    encode_video(path, frames, fps, codec, options, container_options)
