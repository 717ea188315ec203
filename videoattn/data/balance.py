"""Class balance for training (``data.balance``): an exactly class-balanced order of the training
videos for each epoch (``sampler``), and inverse-frequency class weights for the loss (``loss``).

Both count the training labels only (``labels: (N,)`` int, one per training video, in dataset
order); classes of the class list without a training video are never drawn and get weight 0 (no
training label ever picks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch


@dataclass(frozen=True)
class ClassCounts:
    """How many training videos each class has: ``counts (C,)`` int64 over the class list."""

    counts: torch.Tensor

    @classmethod
    def of(cls, labels: Sequence[int], num_classes: int) -> "ClassCounts":
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"a label outside [0, {num_classes})")
        return cls(torch.bincount(labels, minlength=num_classes))

    @property
    def present(self) -> int:
        """Classes with at least one training video."""
        return int((self.counts > 0).sum())

    def describe(self) -> str:
        """``N videos, C of K classes, min..max per class`` (for the start-up line)."""
        have = self.counts[self.counts > 0]
        low, high = (int(have.min()), int(have.max())) if have.numel() else (0, 0)
        total, classes = int(self.counts.sum()), len(self.counts)
        return f"{total} videos in {self.present} of {classes} classes, {low}..{high} per class"


MODES = ("none", "sampler", "loss")


@dataclass(frozen=True)
class Balance:
    """``data.balance`` for one training set: its class counts, and the loss's class weights."""

    mode: str  # none | sampler | loss
    counts: ClassCounts
    weights: Optional[torch.Tensor] = None  # (C,) :func:`class_weights` under ``loss``, else None

    @classmethod
    def of(cls, mode: str, labels: Sequence[int], num_classes: int) -> "Balance":
        if mode not in MODES:
            raise ValueError(f"data.balance must be one of {' | '.join(MODES)}, got {mode!r}")
        weights = class_weights(labels, num_classes) if mode == "loss" else None
        return cls(mode, ClassCounts.of(labels, num_classes), weights)

    def describe(self) -> str:
        """The start-up line: the counts, and what balancing does with them."""
        line = f"class balance {self.mode}: {self.counts.describe()}"
        n, p = int(self.counts.counts.sum()), self.counts.present
        if self.mode == "sampler":
            line += f"; each epoch draws {n} videos, {n // p}{'' if n % p == 0 else f' or {n // p + 1}'} of each class"
        elif self.mode == "loss":
            have = self.weights[self.counts.counts > 0]
            line += f"; loss weights {have.min():.4g}..{have.max():.4g} (mean 1 over the videos)"
        return line


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """``(num_classes,)`` float32 inverse-frequency weights ``w_c = N / (P * n_c)``: N training
    videos, ``n_c`` of class c, P classes with ``n_c > 0`` (sklearn's ``class_weight="balanced"``
    when every class has videos); 0 for a class without videos.

    Normalised so that the mean weight over the training *samples* is exactly 1
    (``sum_c n_c w_c / N = 1``): the weighted loss keeps the scale of the unweighted one, so
    ``solver.base_lr`` need not change. Each class carries the same total weight ``N / P``.
    """
    counts = ClassCounts.of(labels, num_classes).counts.double()
    present = counts > 0
    weights = torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_i w[y_i] * CE(logits_i, y_i)``: ``logits (B, C)``, ``labels (B,)``, ``weights (C,)``.

    The plain mean over the batch, not PyTorch's ``weight=`` mean (which divides by the batch's sum
    of weights: a normaliser that changes with each batch's class mix, and from rank to rank under
    DDP, so the averaged gradient is not the epoch's weighted mean). With :func:`class_weights` the
    expected loss over an epoch is the class-balanced loss.
    """
    losses = torch.nn.functional.cross_entropy(logits, labels, reduction="none")  # (B,)
    return (weights.to(losses.device)[labels] * losses).mean()


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``(N,)`` int64 indices into ``labels (N,)``: one epoch of N draws, exactly class-balanced.

    Each of the P classes with videos gets ``N // P`` draws, and ``N % P`` classes drawn at random
    get one more. A class's draws walk through fresh random permutations of its videos (round-robin):
    a rare class repeats each of its videos evenly (``floor`` or ``ceil`` of draws / videos times), a
    frequent one contributes distinct videos, a different subset each epoch. The draws are then
    shuffled together. Everything comes from ``generator``, so equal seeds give equal orders on
    every rank.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    n = labels.numel()
    if n == 0:
        return labels
    by_class = labels.argsort(stable=True)  # (N,): the videos grouped by class, dataset order within
    sizes = torch.bincount(labels)
    groups = [g for g in torch.split(by_class, sizes.tolist()) if g.numel()]
    draws = torch.full((len(groups),), n // len(groups), dtype=torch.int64)
    draws[torch.randperm(len(groups), generator=generator)[: n % len(groups)]] += 1
    chosen: List[torch.Tensor] = []
    for members, k in zip(groups, draws.tolist()):
        rounds = -(-k // members.numel())
        walk = [members[torch.randperm(members.numel(), generator=generator)] for _ in range(rounds)]
        chosen.append(torch.cat(walk)[:k])
    order = torch.cat(chosen)
    return order[torch.randperm(n, generator=generator)]
