"""A video's display rotation, applied to the pixels: the one rule of every tool that re-encodes a video.

Phones store a video filmed upright as sideways frames plus a display matrix (e.g. -90 degrees)
that players apply. decord, the training reader, applies it too: such a clip decodes upright
(taller than wide). PyAV hands the frames out as stored and reports the matrix as
``frame.rotation`` (degrees, counter-clockwise). The tools that decode with PyAV and write a new
video (``prepare_data``, ``predict --render``) therefore turn every frame upright with
:func:`upright_frame` / :func:`upright_array` and write no display matrix: the output looks as the
source played, and decord reads the same frames from either file. An angle that is not a multiple
of 90 degrees is rounded to the nearest quarter turn; mirroring flags are not applied.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def quarter_turns(frame) -> int:
    """Counter-clockwise quarter turns (0..3) that make a decoded PyAV ``frame`` upright."""
    try:
        degrees = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(degrees / 90)) % 4 if math.isfinite(degrees) else 0


def upright_size(width: int, height: int, turns: int) -> Tuple[int, int]:
    """(W, H) of a ``width`` x ``height`` frame after ``turns`` quarter turns."""
    return (height, width) if turns % 2 else (width, height)


def upright_array(image: np.ndarray, turns: int) -> np.ndarray:
    """An (H, W, C) ``image`` turned ``turns`` quarter turns counter-clockwise."""
    return np.ascontiguousarray(np.rot90(image, turns)) if turns % 4 else image


def upright_frame(frame, turns: int):
    """The PyAV ``frame`` turned upright (an RGB frame; ``frame`` itself when ``turns`` is 0)."""
    if not turns % 4:
        return frame
    import av

    return av.VideoFrame.from_ndarray(upright_array(frame.to_ndarray(format="rgb24"), turns), format="rgb24")
