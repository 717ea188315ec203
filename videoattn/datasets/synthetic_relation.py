"""A synthetic task whose class is a relation between two distant objects at distant times.

Two *targets* sit far apart. In the first half of the video the first one makes a *trip*: it
slides out by :data:`TRIP_LENGTH`, stays, and slides back home. In the second half the other one
makes a trip along the same axis. The class says whether the two trips go the same way
(``same way``) or opposite ways (``opposite ways``). Among them drift *distractors*: objects of the
very same shape, size and colour that slide all the time, at the trips' speed, bouncing off the
frame's edges. So:

- the two events that decide the class happen at different places (at least
  :data:`MIN_TARGET_DISTANCE` of the side apart) and times (one in each half of the clip): the class
  is a relation across the frame and the clip. Each trip alone goes either way in both classes, so
  neither place alone, nor a count of directions over the frame, tells the class (the counts of
  "same way" are 2-0 or 0-2, those of "opposite ways" 1-1: a linear read-out of pooled features
  cannot separate them);
- one frame shows at most one target away from home, and each trip goes either way with the same
  probability in both classes: every single frame has the same distribution in both classes
  (tested with per-frame statistics, tests/data/test_synthetic_relation.py);
- a target looks exactly like a distractor in every frame, and its slide is a distractor's step:
  only its history (still, out, still, back) tells where to look.

Videos are square (:data:`RELATION_SIZES`), :data:`RELATION_SECONDS` long, with bright objects on a
dark background, written with the same codecs, frame rates, layout and annotations as the motion
set (``synthetic.write_dataset``). A horizontal flip keeps the class (``data.random_flip`` may stay on).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from videoattn.datasets.synthetic import DECORD_BAD_WIDTHS, _object_mask, plan_videos, write_dataset
from videoattn.utils.errors import UsageError

RELATION_CLASSES: List[str] = ["opposite ways", "same way"]  # sorted: the label is the index
# (width, height): square, so that a square crop of any scale keeps the central region; 48 and 72
# are widths decord 0.6 cannot decode (synthetic.DECORD_BAD_WIDTHS).
RELATION_SIZES: List[Tuple[int, int]] = [(64, 64), (80, 80), (96, 96)]
# Video length: about one 8 x 8 clip at 30 fps (2.13 s), so that a clip sees the whole story.
RELATION_SECONDS = (1.8, 2.1)

# Times are fractions of the video. A trip is SLIDE_TIME out, HOLD_TIME away, SLIDE_TIME back: with
# 8 frames a clip (one every ~0.14), about two frames see the target away. The first trip starts in
# FIRST_TRIP, the second in SECOND_TRIP: the first is home before the second leaves.
SLIDE_TIME, HOLD_TIME = 0.08, 0.14
FIRST_TRIP = (0.04, 0.16)
SECOND_TRIP = (0.5, 0.66)
# Space is in fractions of the side. Targets (and their trips) stay inside TARGET_REGION, which any
# crop of the recipe keeps (a 32 px crop of a square resized to at most 36 px keeps 89% of the side).
TARGET_REGION = (0.1, 0.9)
MIN_TARGET_DISTANCE = 0.4
TRIP_LENGTH = 0.22
RADIUS = (0.08, 0.1)


@dataclasses.dataclass(frozen=True)
class Track:
    """One object. Targets (``trip`` set) sit at (x, y) and make one trip by (dx, dy) starting at
    time ``trip`` (a fraction of the video); distractors (``trip`` None) are at (x + dx u, y + dy u)
    at time u, folded back into the frame."""

    x: float
    y: float
    dx: float
    dy: float
    trip: Optional[float] = None

    def position(self, u: float) -> Tuple[float, float]:
        if self.trip is None:
            return _fold(self.x + self.dx * u), _fold(self.y + self.dy * u)
        t = u - self.trip
        out = min(max(t / SLIDE_TIME, 0.0), 1.0) - min(max((t - SLIDE_TIME - HOLD_TIME) / SLIDE_TIME, 0.0), 1.0)
        return self.x + self.dx * out, self.y + self.dy * out


@dataclasses.dataclass(frozen=True)
class RelationScene:
    """Everything random in one video: ``targets[0]`` travels first; ``label`` indexes RELATION_CLASSES."""

    label: int
    targets: Tuple[Track, Track]
    distractors: Tuple[Track, ...]
    radius: float  # fraction of the side
    shape: str
    fg: np.ndarray  # (3,) float32, the colour of every object
    bg: np.ndarray  # (3,) float32


def _fold(v: float) -> float:
    """Fold v back into [0.08, 0.92] (a bounce off the frame's edges)."""
    lo, hi = 0.08, 0.92
    t = (v - lo) % (2 * (hi - lo))
    return lo + (t if t <= hi - lo else 2 * (hi - lo) - t)


def _homes(rng: np.random.Generator, radius: float, trips: Sequence[Tuple[float, float]]) -> List[Tuple[float, float]]:
    """Two homes, MIN_TARGET_DISTANCE apart, from which the trips (dx, dy) stay in TARGET_REGION."""
    lo, hi = TARGET_REGION[0] + radius, TARGET_REGION[1] - radius
    while True:
        homes = [(float(x), float(y)) for x, y in rng.uniform(lo, hi, size=(2, 2))]
        inside = all(lo <= x + dx <= hi and lo <= y + dy <= hi for (x, y), (dx, dy) in zip(homes, trips))
        if inside and math.dist(*homes) >= MIN_TARGET_DISTANCE:
            return homes


def draw_scene(label: int, rng: np.random.Generator, num_distractors: int = 2) -> RelationScene:
    """The random content of one video of class ``label`` (0: opposite ways, 1: same way)."""
    bg = rng.integers(0, 100, size=3).astype(np.float32)  # bright objects on a dark background
    fg = rng.integers(170, 256, size=3).astype(np.float32)
    radius = float(rng.uniform(*RADIUS))
    shape = str(rng.choice(["disc", "square"]))
    axis = np.array([1.0, 0.0]) if rng.random() < 0.5 else np.array([0.0, 1.0])
    first_sign = 1.0 if rng.random() < 0.5 else -1.0
    signs = (first_sign, first_sign if label == 1 else -first_sign)
    trips = [tuple(float(v) for v in TRIP_LENGTH * s * axis) for s in signs]
    homes = _homes(rng, radius, trips)
    starts = (float(rng.uniform(*FIRST_TRIP)), float(rng.uniform(*SECOND_TRIP)))
    targets = tuple(Track(x, y, dx, dy, trip=t) for (x, y), (dx, dy), t in zip(homes, trips, starts))
    speed = TRIP_LENGTH / SLIDE_TIME  # the targets' own speed
    distractors = []
    for _ in range(num_distractors):
        x, y = rng.uniform(0.08, 0.92, size=2)
        angle = rng.uniform(0, 2 * math.pi)
        distractors.append(Track(float(x), float(y), speed * math.cos(angle), speed * math.sin(angle)))
    return RelationScene(label, targets, tuple(distractors), radius, shape, fg, bg)


def render_scene(
    scene: RelationScene, times: Sequence[float], width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    """Frames of ``scene`` at ``times`` (fractions of the video); ``rng`` draws the static texture.

    Returns:
        frames: (len(times), H, W, 3) uint8.
    """
    side = min(width, height)
    texture = rng.normal(0.0, 6.0, size=(height, width, 1)).astype(np.float32)  # static sensor-like noise
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = np.empty((len(times), height, width, 3), np.uint8)
    r = scene.radius * side
    for i, u in enumerate(times):
        mask = np.zeros((height, width), np.float32)
        for track in scene.distractors + scene.targets:
            x, y = track.position(float(u))
            cx, cy = width / 2 + (x - 0.5) * side, height / 2 + (y - 0.5) * side
            mask = np.maximum(mask, _object_mask(yy, xx, cx, cy, r, scene.shape, 0.0))
        m = mask[..., None]
        frames[i] = np.clip(scene.bg * (1 - m) + scene.fg * m + texture, 0, 255).astype(np.uint8)
    return frames


def relation_renderer(num_distractors: int):
    """A ``synthetic.Renderer`` for :func:`write_dataset`: scene and texture from the video's rng."""

    def render(label: int, num_frames: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
        scene = draw_scene(label, rng, num_distractors)
        return render_scene(scene, np.linspace(0.0, 1.0, num_frames), width, height, rng)

    return render


def _scaled_sizes(size_scale: float) -> List[Tuple[int, int]]:
    """RELATION_SIZES times ``size_scale``, still square: sides in multiples of 16, at least 32,
    none decord 0.6 cannot decode (the next multiple instead)."""
    sides = [max(32, int(round(w * size_scale / 16)) * 16) for w, _ in RELATION_SIZES]
    return [(s + 16, s + 16) if s in DECORD_BAD_WIDTHS else (s, s) for s in sides]


def make_relation_dataset(
    out_dir: str,
    num_classes: int = 2,
    train_per_class: int = 100,
    val_per_class: int = 25,
    test_per_class: int = 0,
    seed: int = 0,
    min_seconds: float = RELATION_SECONDS[0],
    max_seconds: float = RELATION_SECONDS[1],
    size_scale: float = 1.0,
    workers: int = 0,
    num_distractors: int = 2,
) -> Dict[str, object]:
    """Write the relation set under ``out_dir``: the motion set's layout, codecs and annotations
    (``synthetic`` module docstring), this module's contents. Arguments as ``make_synthetic_dataset``;
    ``num_classes`` must be 2; ``num_distractors`` >= 0."""
    if num_classes != len(RELATION_CLASSES):
        raise UsageError(f"the relation set has {len(RELATION_CLASSES)} classes, got --classes {num_classes}")
    if num_distractors < 0:
        raise UsageError(f"num_distractors must be >= 0, got {num_distractors}")
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    plan = plan_videos(num_classes, per_class, seed, min_seconds, max_seconds, 1.0, _scaled_sizes(size_scale))
    return write_dataset(out_dir, RELATION_CLASSES, plan, relation_renderer(num_distractors), workers)
