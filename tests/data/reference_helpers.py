"""The reference implementations the protocol tests compare with, imported from their installed
packages (PyPI ``pyslowfast==1.0``, ``mmaction2==1.2.0``), and helpers to run them.

A missing reference is an import error at collection, naming the install command: these tests
never skip. ``make venv`` installs them (``requirements-references.txt``, with ``--no-deps``).
"""
from __future__ import annotations

import importlib
import random
from contextlib import contextmanager

import numpy as np
import torch

INSTALL = "pip install --no-deps -r requirements-references.txt (make venv does)"


def reference(module: str):
    """Import ``module`` of a reference package, or fail with the command that installs it."""
    import av  # noqa: F401  -- PyAV's FFmpeg before decord's (mmaction2 imports decord)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the protocol tests compare with the reference code; {module} does not import "
                          f"({e}). Install the references: {INSTALL}") from e


@contextmanager
def seeded_globals(seed: int):
    """Seed Python's ``random`` and numpy's legacy global generator (PySlowFast draws from both),
    restoring both afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def slowfast_indices(decoder, video_frames: int, clip_size: float, view: int, num_views: int, num_frames: int):
    """PySlowFast's frame indices: its ``get_start_end_idx`` then ``temporal_sampling`` over a video
    whose frame i is the number i."""
    start, end = decoder.get_start_end_idx(video_frames, clip_size, view, num_views)[:2]
    return decoder.temporal_sampling(torch.arange(video_frames), start, end, num_frames).numpy()


def coordinate_frames(h: int, w: int) -> torch.Tensor:
    """(1, 2, h, w) float: channel 0 holds the row, channel 1 the column of each pixel, so a crop's
    (top, left) is its first pixel."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    return torch.stack([rows, cols])[None]


def box_of(cropped: torch.Tensor) -> tuple:
    """(top, left) of a crop of :func:`coordinate_frames`."""
    return int(cropped[0, 0, 0, 0]), int(cropped[0, 1, 0, 0])


def normalize_slowfast(frames_thwc: torch.Tensor, mean=(0.45,) * 3, std=(0.225,) * 3) -> torch.Tensor:
    """What PySlowFast's Kinetics does before its spatial sampling: uint8 (T, H, W, 3) -> float
    (3, T, H, W), ``(x / 255 - mean) / std``."""
    x = (frames_thwc.float() / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(3, 0, 1, 2)
