"""Draw per-window predictions onto a video and as a timeline strip (``predict --render``).

* :func:`render_video`: the input decoded with PyAV and re-encoded as H.264 (yuv420p) ``.mp4``,
  same frame rate and frame count, with the top-3 labels and scores of the window that holds
  each frame (:func:`videoattn.apps.timeline.window_at`) in a box at the top left (fewer
  lines on frames too small for three). Odd frame
  sizes are padded by one pixel (edge replicated) to the even sizes yuv420p needs; audio is
  dropped; a display rotation (phone video) is applied: frames are turned upright
  (:mod:`videoattn.data.orientation`, as in prepare_data). Text uses PIL's built-in default font (no font files needed).
* :func:`render_timeline`: a PNG strip, time on x: the segments of equal top label as coloured
  bars with their label and mean score, and the top-1 score of every window below.

Both write atomically (temporary file + rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from videoattn.apps.timeline import WindowTopK, handovers, segments, window_at
from videoattn.data.orientation import quarter_turns, upright_array
from videoattn.utils.io import atomic_path


@dataclass(frozen=True)
class Overlay:
    """Where and how the labels are drawn: ``box = (x0, y0, x1, y1)`` (pixels, x1/y1 exclusive),
    holding at most ``rows`` lines."""

    box: Tuple[int, int, int, int]
    font_size: int
    line_height: int
    pad: int
    rows: int


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: scalable built-in font
    except TypeError:  # pragma: no cover - older Pillow: fixed bitmap font
        return ImageFont.load_default()


def overlay_lines(window: WindowTopK, top: int = 3) -> List[str]:
    """``["label  0.87", ...]`` for the ``top`` best classes of ``window``."""
    return [f"{label}  {score:.2f}" for label, score in zip(window.labels[:top], window.scores[:top])]


def overlay_layout(width: int, height: int, lines: Sequence[Sequence[str]]) -> Overlay:
    """One fixed box for the whole video, wide enough for the longest line of any window
    (capped at the frame); the font scales with the frame height, and a small frame shows fewer
    lines so that the box covers at most its top half (at least one line)."""
    size = max(10, round(height / 22))
    font = _font(size)
    pad = max(2, size // 3)
    line_h = size + pad
    rows = min(max((len(ls) for ls in lines), default=0), max(1, (height // 2 - 2 * pad) // line_h))
    text_w = max((font.getbbox(s)[2] for ls in lines for s in ls[:rows]), default=0)
    box = (0, 0, min(width, text_w + 2 * pad), min(height, rows * line_h + 2 * pad))
    return Overlay(box=box, font_size=size, line_height=line_h, pad=pad, rows=rows)


def draw_overlay(frame: np.ndarray, lines: Sequence[str], layout: Overlay) -> np.ndarray:
    """``(H, W, 3)`` uint8 frame with ``lines`` drawn in white on a darkened box; a new array."""
    x0, y0, x1, y1 = layout.box
    out = frame.copy()
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1].astype(np.uint16) * 2 // 7).astype(np.uint8)
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    font = _font(layout.font_size)
    for r, text in enumerate(lines[: layout.rows]):
        draw.text((x0 + layout.pad, y0 + layout.pad + r * layout.line_height), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def _even(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    return np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else arr


def render_video(video_path: str, windows: Sequence[WindowTopK], out_path: str, top: int = 3, crf: int = 20) -> dict:
    """Write ``out_path`` (.mp4): ``video_path`` with the current top-``top`` labels on every frame.

    A frame ``i`` is at ``i / fps`` seconds (the frame-index time base of the sliding windows).
    Returns ``{"frames", "fps", "width", "height", "box"}``; raises ``ValueError`` (one line)
    for a video PyAV cannot decode (nothing is written).
    """
    import av

    if not windows:
        raise ValueError(f"no windows to render for {video_path}")
    lines = [overlay_lines(w, top) for w in windows]
    try:
        with av.open(video_path) as src, atomic_path(out_path) as tmp:
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            fps = stream.average_rate or stream.guessed_rate
            if not fps:
                raise ValueError("no frame rate")
            with av.open(tmp, "w", format="mp4") as dst:
                info = _transcode(src.decode(stream), dst, Fraction(fps), lines, windows, crf)
    except (av.error.FFmpegError, OSError, IndexError, ValueError) as e:
        raise ValueError(f"cannot render {video_path}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    return info


def _transcode(frames, dst, fps: Fraction, lines, windows, crf: int) -> dict:
    """Encode the decoded ``frames`` with their overlays into the open container ``dst``."""
    import av

    out, layout, n = None, None, 0
    for n, frame in enumerate(frames, start=1):  # turned upright: the display rotation is applied
        arr = _even(upright_array(frame.to_ndarray(format="rgb24"), quarter_turns(frame)))
        if out is None:
            h, w = arr.shape[:2]
            layout = overlay_layout(w, h, lines)
            out = dst.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "veryfast"})
            out.width, out.height, out.pix_fmt = w, h, "yuv420p"
        elif arr.shape[:2] != (out.height, out.width):  # size change mid-stream: keep the first size
            arr = _even(np.asarray(Image.fromarray(arr).resize((out.width, out.height))))
        arr = draw_overlay(arr, lines[window_at(windows, (n - 1) / float(fps))], layout)
        dst.mux(out.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
    if out is None:
        raise ValueError("no frames decoded")
    dst.mux(out.encode())
    return {"frames": n, "fps": float(fps), "width": out.width, "height": out.height, "box": layout.box}


def label_colours(windows: Sequence[WindowTopK]) -> dict:
    """Class index -> RGBA colour (matplotlib ``tab20``), in order of first appearance as top-1."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    order = list(dict.fromkeys(w.indices[0] for w in windows))
    return {idx: cmap(i % cmap.N) for i, idx in enumerate(order)}


def render_timeline(
    windows: Sequence[WindowTopK],
    out_path: str,
    duration_s: Optional[float] = None,
    title: str = "",
    width_in: float = 12.0,
    height_in: float = 2.0,
    dpi: int = 100,
) -> Tuple[int, int]:
    """Write a ``width_in x height_in`` inch PNG strip at ``dpi``; return its ``(width, height)`` in pixels.

    Top: one bar per segment (:func:`videoattn.apps.timeline.segments`) coloured by its label,
    labelled "label score" where it fits; a legend above names every colour. Bottom: each window's
    top-1 score over the time it holds (:func:`videoattn.apps.timeline.window_at`), as the
    rendered video shows it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if not windows:
        raise ValueError("no windows to draw")
    end = max(duration_s or 0.0, max(w.end_s for w in windows))
    colours = label_colours(windows)
    fig, (bars, line) = plt.subplots(
        2, 1, figsize=(width_in, height_in), dpi=dpi, sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08}
    )
    for seg in segments(windows):
        bars.broken_barh(
            [(seg.start_s, seg.end_s - seg.start_s)],
            (0, 1),
            facecolors=colours[seg.index],
            edgecolors="white",
            linewidth=0.5,
        )
        text = f"{seg.label} {seg.score:.2f}"
        if (seg.end_s - seg.start_s) / end * width_in * 72 > 5.5 * len(text):  # fits at 8 pt
            r, g, b, _ = colours[seg.index]
            ink = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            bars.text((seg.start_s + seg.end_s) / 2, 0.5, text, ha="center", va="center", fontsize=8, color=ink)
    bars.set_ylim(0, 1)
    bars.set_yticks([])
    times = handovers(windows)  # each window's score over the time it holds (as in the video)
    lefts = [windows[0].start_s, *times]
    rights = [*times, windows[-1].end_s]
    for w, a, b in zip(windows, lefts, rights):
        line.hlines(w.scores[0], a, b, colors=[colours[w.indices[0]]], linewidth=2)
    line.set_ylim(0, 1.05)
    line.set_xlim(0, end)
    line.set_ylabel("top-1", fontsize=7)
    line.set_xlabel("time (s)", fontsize=8)
    line.tick_params(labelsize=7)
    names = {w.indices[0]: w.labels[0] for w in windows}
    handles = [Patch(facecolor=colours[i], label=names[i]) for i in colours]  # also names the narrow segments
    fig.legend(
        handles=handles,
        loc="upper right",
        ncol=min(len(handles), 6),
        fontsize=7,
        frameon=False,
        handlelength=1.0,
        columnspacing=1.0,
        borderaxespad=0.2,
    )
    if title:
        bars.set_title(title, fontsize=9, loc="left")
    fig.subplots_adjust(left=0.05, right=0.99, top=0.86, bottom=0.24)
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return int(round(width_in * dpi)), int(round(height_in * dpi))
