"""Multinomial logistic regression with L2 for linear probes: full-batch L-BFGS in float64.

The probe minimises, over ``W: (C, D)`` and ``b: (C,)`` on standardised features
``z = (x - mean) / std`` (train statistics)::

    mean_i CE(W z_i + b, y_i) + l2 / 2 * ||W||^2        (the bias is not penalised)

which is scikit-learn's ``LogisticRegression(C=1 / (l2 * n))`` objective divided by ``C * n`` (n
training samples). It is convex; L-BFGS (torch.optim.LBFGS, strong-Wolfe line search; the CLIP and
VideoMAE linear-probe protocols use L-BFGS too) starts from zero, so a fit is a function of the data
and ``l2`` alone: no seed, bit-identical on rerun with the same torch threads. ``l2`` is picked from
a log grid by validation accuracy (ties: lower validation loss), on a validation split or by k-fold
over the training videos (:func:`kfold_assignment`, stratified, seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from videoattn.evaluation.metrics import topk_correct

DEFAULT_L2_GRID = tuple(10.0 ** (k / 2) for k in range(-10, 3))  # 1e-5 .. 10, half decades: 13 fits
MAX_ITER = 1000  # L-BFGS iterations per fit; small problems converge in tens
STOP_GRAD = 1e-8  # L-BFGS stops once every gradient entry is below this (float64; the loss is O(1))
# A fit counts as converged at max |gradient| <= 1e-6: by strong convexity (modulus l2) its loss is then
# within |g|^2 / (2 l2) <= P 1e-12 / (2 l2) of the minimum (P parameters): 5e-5 for P = 1000 at l2 = 1e-5.
GRAD_TOL = 1e-6
Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass
class Standardiser:
    """Train statistics: ``mean``, ``std``: ``(D,)`` float64; a feature constant on the training set
    (std below 1e-12 of the largest) gets std 1, so it stays constant instead of blowing up."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "Standardiser":
        """``x: (N, D)``."""
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-12 * max(float(std.max()), 1e-300), std, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


@dataclass
class LinearFit:
    """``weight: (C, D)``, ``bias: (C,)`` float64 on standardised features, and how the fit ended."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    loss: float  # the objective at the end
    grad_max: float  # max |gradient| at the end
    iterations: int

    @property
    def converged(self) -> bool:
        return self.grad_max <= GRAD_TOL

    def logits(self, z: np.ndarray) -> torch.Tensor:
        """``z: (N, D)`` standardised -> ``(N, C)`` float64."""
        return torch.as_tensor(z, dtype=torch.float64) @ self.weight.T + self.bias


def objective(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """The probe's loss (module docstring); ``z: (N, D)``, ``y: (N,)``."""
    return F.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()


def fit_logistic(z: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_iter: int = MAX_ITER) -> LinearFit:
    """Fit on standardised ``z: (N, D)`` with labels ``y: (N,)`` in ``[0, num_classes)``."""
    zt, yt = torch.as_tensor(z, dtype=torch.float64), torch.as_tensor(y, dtype=torch.int64)
    w = torch.zeros(num_classes, zt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=STOP_GRAD,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        w.grad = b.grad = None  # not opt.zero_grad(): its first call imports torch._dynamo (~3 s)
        loss = objective(w, b, zt, yt, l2)
        loss.backward()
        return loss

    opt.step(closure)
    loss = closure()
    grad_max = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
    iterations = int(opt.state[w].get("n_iter", 0))
    return LinearFit(w.detach().clone(), b.detach().clone(), l2, float(loss.detach()), grad_max, iterations)


@dataclass
class Scores:
    """How a probe does on one set of videos (fractions in [0, 1])."""

    num: int
    top1: float
    top1_ci95: List[float]  # Wilson score interval
    top5: float  # NaN where there are 5 classes or fewer (top-5 would be 1 by construction)
    loss: float  # mean cross-entropy (no L2 term)

    def line(self) -> str:
        top5 = "" if math.isnan(self.top5) else f", top-5 {100 * self.top5:.1f}%"
        lo, hi = self.top1_ci95
        return f"top-1 {100 * self.top1:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%, n={self.num}){top5}"


def wilson_interval(hits: int, n: int, z: float = Z95) -> List[float]:
    """The Wilson score interval of a proportion ``hits / n``: each video one independent trial.

    Closed form (no resampling seed) and, unlike the normal (Wald) interval, neither collapses to a
    point at 0% or 100% nor leaves [0, 1] on small sets."""
    p, z2 = hits / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def score(logits: torch.Tensor, labels: np.ndarray) -> Scores:
    """``logits: (N, C)`` per video, ``labels: (N,)``."""
    y = torch.as_tensor(labels, dtype=torch.int64)
    hits = topk_correct(logits, y, (1, 5))
    n, h1 = len(y), int(hits[1].sum())
    top5 = int(hits[5].sum()) / n if logits.shape[1] > 5 else float("nan")
    return Scores(n, h1 / n, wilson_interval(h1, n), top5, float(F.cross_entropy(logits, y)))


def kfold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """``(N,)`` fold of each training video: per class, its videos in a seeded random order dealt
    round-robin over the folds (stratified; a class with fewer videos than folds misses some)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        out[members] = (start + np.arange(len(members))) % folds
        start += len(members)  # the next class continues the deal, so folds stay balanced in size
    return out


@dataclass
class GridPoint:
    """One ``l2`` of the grid: validation top-1 and loss (k-fold: means over folds)."""

    l2: float
    top1: float
    loss: float
    converged: bool


def pick(points: Sequence[GridPoint]) -> GridPoint:
    """Highest validation top-1; ties: lowest validation loss, then the larger ``l2``."""
    return min(points, key=lambda p: (-p.top1, p.loss, -p.l2))


def grid_point(l2: float, fits: Sequence[LinearFit], held_out: Sequence[Dict[str, object]]) -> GridPoint:
    """Mean over ``fits`` of their scores on ``held_out`` = ``[{"z": (N, D), "y": (N,)}]``."""
    scores = [score(f.logits(h["z"]), h["y"]) for f, h in zip(fits, held_out)]
    return GridPoint(
        l2,
        float(np.mean([s.top1 for s in scores])),
        float(np.mean([s.loss for s in scores])),
        all(f.converged for f in fits),
    )
