"""Classification metrics for clips and videos: top-k, confusion matrix, mean class accuracy
(balanced accuracy), macro-F1, and the per-view -> per-video aggregation used by multi-view testing.

All accuracies are fractions in [0, 1]. Tensors: ``logits: (N, C)``, ``labels: (N,)`` int.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch

from videoattn.utils.distributed import all_reduce_
from videoattn.utils.errors import OneLineError, UsageError

AGGREGATIONS = ("softmax", "sum", "max")


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, torch.Tensor]:
    """Per-sample hit flags: ``{k: (N,) bool}``, True where ``labels`` is among the top-k scores.

    ``k`` larger than the number of classes counts every sample as a hit (as torch.topk would
    otherwise fail). Ties are broken by ``torch.topk`` (lowest index first on CPU).
    """
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits (N, C) and labels (N,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (N, kmax)
    hits = top == labels[:, None].to(top.device)  # (N, kmax)
    return {k: hits[:, : min(k, kmax)].any(dim=1) for k in ks}


def non_finite_rows(t: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the rows of ``t (N, ...)`` that hold a NaN or an infinity."""
    return ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)


class NonFiniteError(OneLineError):
    """A model output held NaN or inf: the tool wrote its files with those videos marked and left
    out of every accuracy, and exits with status 1 (its results are incomplete)."""


class NonFiniteLossError(NonFiniteError, FloatingPointError):
    """The training loss of some rank is NaN or inf: training stops before the update."""


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts; row = true class, column = predicted class (sklearn's layout)."""
    preds, labels = preds.long().flatten().cpu(), labels.long().flatten().cpu()
    if preds.shape != labels.shape:
        raise ValueError(f"preds and labels differ in length: {preds.numel()} vs {labels.numel()}")
    if labels.numel() and (min(preds.min(), labels.min()) < 0 or max(preds.max(), labels.max()) >= num_classes):
        raise ValueError(f"class index outside [0, {num_classes})")
    flat = torch.bincount(labels * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(conf: torch.Tensor) -> torch.Tensor:
    """``(C,)`` float64 recall of each class; NaN for classes with no samples."""
    conf = conf.double()
    support = conf.sum(dim=1)
    return torch.where(support > 0, conf.diag() / support.clamp(min=1), torch.full_like(support, float("nan")))


def mean_class_accuracy(conf: torch.Tensor) -> float:
    """Mean of per-class recall over classes that have at least one sample (mmaction2's definition)."""
    acc = per_class_accuracy(conf)
    present = ~acc.isnan()
    return acc[present].mean().item() if present.any() else float("nan")


def balanced_accuracy(conf: torch.Tensor) -> float:
    """sklearn's ``balanced_accuracy_score``: the mean recall over the classes that have samples,
    the same number as :func:`mean_class_accuracy` (mmaction2's name). NaN if no class has one."""
    return mean_class_accuracy(conf)


def per_class_f1(conf: torch.Tensor) -> torch.Tensor:
    """``(C,)`` float64 F1 of each class, ``2 TP / (2 TP + FP + FN)`` (= ``2 P R / (P + R)``, and 0
    where a class has samples but no prediction, or predictions but no sample); NaN (0/0) for a class
    with neither, which is left out of :func:`macro_f1`."""
    conf = conf.double()
    tp = conf.diag()
    denom = conf.sum(dim=0) + conf.sum(dim=1)  # 2 TP + FP + FN
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))


def macro_f1(conf: torch.Tensor) -> float:
    """Mean F1 over the classes that occur among the labels or the predictions (sklearn's
    ``f1_score(average="macro")`` with its default labels); NaN if there are none."""
    f1 = per_class_f1(conf)
    seen = ~f1.isnan()
    return f1[seen].mean().item() if seen.any() else float("nan")


def view_scores(logits: torch.Tensor, method: str) -> torch.Tensor:
    """The per-view score that ``method`` aggregates: softmax probabilities or raw logits. ``(N, C)``."""
    if method not in AGGREGATIONS:
        raise UsageError(f"unknown aggregation '{method}' (valid: {', '.join(AGGREGATIONS)})")
    return logits.float().softmax(dim=1) if method in ("softmax", "max") else logits.float()


class VideoAggregator:
    """Accumulates per-view logits into per-video scores; mergeable across processes.

    * ``softmax``: mean over views of softmax probabilities (PySlowFast / mmaction2 default);
    * ``sum``: sum over views of the raw logits;
    * ``max``: element-wise max over views of softmax probabilities.

    Accumulation is in float64, so the result does not depend on how views are split
    between processes (up to float64 rounding). State: ``scores (V, C)``, ``counts (V,)``.
    """

    def __init__(self, num_videos: int, num_classes: int, method: str = "softmax"):
        view_scores(torch.zeros(1, 1), method)  # validate the name
        self.method = method
        fill = float("-inf") if method == "max" else 0.0
        self.scores = torch.full((num_videos, num_classes), fill, dtype=torch.float64)
        self.counts = torch.zeros(num_videos, dtype=torch.int64)

    def update(self, logits: torch.Tensor, video_index: torch.Tensor) -> None:
        """``logits: (N, C)`` of N views; ``video_index: (N,)`` the video each view belongs to."""
        s = view_scores(logits.detach().cpu(), self.method).double()
        idx = video_index.long().cpu()
        if self.method == "max":
            self.scores.scatter_reduce_(0, idx[:, None].expand_as(s), s, "amax", include_self=True)
        else:
            self.scores.index_add_(0, idx, s)
        self.counts.index_add_(0, idx, torch.ones_like(idx))

    def all_reduce(self) -> None:
        """Merge the states of all processes in place (no-op in a single process)."""
        all_reduce_(self.scores, "max" if self.method == "max" else "sum")
        all_reduce_(self.counts, "sum")

    def video_scores(self) -> torch.Tensor:
        """``(V, C)`` aggregated scores; rows of videos without any view are NaN."""
        out = self.scores.clone()
        if self.method == "softmax":
            out /= self.counts.clamp(min=1)[:, None].double()
        out[self.counts == 0] = float("nan")
        return out
