"""Clip-level validation (used by training) and multi-view video-level testing.

Both work unchanged in one process and under torchrun: each process scores its shard of the
loader; results are gathered so that every (video, view) counts exactly once, and the video-level
result equals the single-process one (per-video scores are accumulated in float64).
Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from videoattn.data.loader import unique_broken
from videoattn.data.transforms import DeviceNormalizer
from videoattn.evaluation.metrics import (
    VideoAggregator,
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    mean_class_accuracy,
    non_finite_rows,
    topk_correct,
)
from videoattn.utils.distributed import all_gather_object, all_reduce_, is_main_process
from videoattn.utils.state_dict import unwrap_model


def _scored_batches(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    normalize: DeviceNormalizer,
    amp: Optional[torch.dtype],
    desc: str,
) -> Iterator[Tuple[dict, torch.Tensor, Optional[torch.Tensor]]]:
    """Yield ``(batch, valid (B,) bool, logits (B_valid, C) float32 on the CPU or None)``.

    Items with ``valid=False`` (undecodable test videos) are not run through the model. The model
    runs under ``amp`` autocast (None: off). On CUDA the logits travel to pinned host memory
    asynchronously and each batch is handed out one batch late, so the GPU never waits for the host.
    """
    pending = None
    for batch in tqdm(
        loader, desc=desc, disable=not (is_main_process() and sys.stderr.isatty()), leave=False, dynamic_ncols=True
    ):
        n = batch["label"].shape[0]
        valid = torch.as_tensor(batch.get("valid", torch.ones(n, dtype=torch.bool))).bool()
        logits = None
        if valid.any():
            clips = batch["clip"] if valid.all() else batch["clip"][valid]  # no copy when all are valid
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = _to_host(model(normalize(clips, device)).float())
        if pending is not None:
            yield _arrived(*pending)
        pending = (batch, valid, logits)
    if pending is not None:
        yield _arrived(*pending)


def _to_host(t: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.cuda.Event]]:
    """Start copying ``t`` to the CPU: (host tensor, CUDA event to wait for, or None if already there)."""
    if t.device.type != "cuda":
        return t.cpu(), None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _arrived(batch: dict, valid: torch.Tensor, logits) -> Tuple[dict, torch.Tensor, Optional[torch.Tensor]]:
    if logits is None:
        return batch, valid, None
    host, event = logits
    if event is not None:
        event.synchronize()
    return batch, valid, host


@dataclass
class ClipTally:
    """One rank's share of :func:`evaluate_clips` (gathered on every rank)."""

    records: np.ndarray  # (N, 5) float64: video index, view index, loss, top-1 hit, top-5 hit
    skipped: list  # (path, reason) of broken videos the loader replaced
    invalid: int  # items marked unreadable
    non_finite: int  # clips whose logits held NaN or inf


@dataclass
class ViewTally:
    """One rank's share of :func:`score_multiview` (gathered on every rank)."""

    hit1: int
    hit5: int
    clips: int  # valid views scored, NaN/inf logits left out
    failed: List[Tuple[int, int, str]]  # (video index, view index, error) of views that did not decode
    seen: np.ndarray  # (N, 2) (video index, view index) pairs scored
    logits: Optional[np.ndarray]  # (N, 2 + C) with save_logits, else None


def _unique_rows(parts: List[np.ndarray]) -> np.ndarray:
    """Concatenate per-rank record arrays whose first two columns are (video_index, view_index),
    keeping the first occurrence of each key (a padding sampler would otherwise count twice)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros((0, 5))
    rows = np.concatenate(parts)
    _, first = np.unique(rows[:, :2].astype(np.int64), axis=0, return_index=True)
    return rows[np.sort(first)]


@torch.inference_mode()
def evaluate_clips(
    model: torch.nn.Module,
    loader,
    device: torch.device,
    normalize: DeviceNormalizer,
    amp: Optional[torch.dtype] = None,
    desc: str = "val",
) -> Dict[str, object]:
    """Single-view validation over ``loader``, gathered across processes.

    Args:
        model: the (possibly DDP-wrapped) classifier; ``model(x: (B, 3, T, H, W)) -> (B, C)``.
        normalize: moves batch clips to ``device`` as normalised float32.
        amp: autocast dtype (None: off).
        loader: yields batches with ``clip``, ``label``, ``video_index``, ``view_index`` [, ``valid``].
    Returns (identical on every rank):
        ``top1``, ``top5`` (fractions), ``loss`` (mean cross-entropy), ``num_clips`` (clips scored,
        each (video, view) once), ``num_invalid`` (items marked unreadable), ``num_non_finite``
        (clips whose logits held NaN or inf: left out of top1/top5/loss), ``skipped``
        (list of (path, reason) of broken videos the loader replaced, each file once).
    """
    net = unwrap_model(model)
    was_training = net.training
    net.eval()
    records, skipped, invalid, non_finite = [], [], 0, 0
    try:
        for batch, valid, logits in _scored_batches(net, loader, device, normalize, amp, desc):
            skipped.extend(batch.get("skipped", []) or [])
            invalid += int((~valid).sum())
            if logits is None:
                continue
            bad = non_finite_rows(logits)  # NaN/inf logits: counted, never scored
            non_finite, logits = non_finite + int(bad.sum()), logits[~bad]
            labels = batch["label"][valid].long()[~bad]
            hits = topk_correct(logits, labels, (1, 5))
            loss = F.cross_entropy(logits, labels, reduction="none")
            scored = batch["video_index"][valid][~bad].numpy(), batch["view_index"][valid][~bad].numpy()
            records.append(
                np.stack([*scored, loss.numpy(), hits[1].numpy(), hits[5].numpy()], axis=1).astype(np.float64)
            )
    finally:
        net.train(was_training)
    local = np.concatenate(records) if records else np.zeros((0, 5))
    gathered = all_gather_object(ClipTally(local, skipped, invalid, non_finite))
    rows = _unique_rows([g.records for g in gathered])
    n = len(rows)
    nan = float("nan")
    return {
        "top1": float(rows[:, 3].mean()) if n else nan,
        "top5": float(rows[:, 4].mean()) if n else nan,
        "loss": float(rows[:, 2].mean()) if n else nan,
        "num_clips": n,
        "num_invalid": sum(g.invalid for g in gathered),
        "num_non_finite": sum(g.non_finite for g in gathered),
        "skipped": unique_broken(s for g in gathered for s in g.skipped),
    }


@dataclass
class MultiViewResult:
    """Everything multi-view testing produced (complete on every rank after gathering)."""

    video_scores: torch.Tensor  # (V, C) float64 aggregated scores; NaN rows for unreadable videos
    video_labels: torch.Tensor  # (V,) int64; -1 where no view was seen
    view_counts: torch.Tensor  # (V,) valid views scored per video
    clip_hits: Dict[int, int]  # {1: n, 5: n} views whose own prediction was a hit
    num_clips: int  # valid views scored
    failed_views: Dict[int, List[Tuple[int, str]]]  # video index -> [(view index, error)]
    view_logits: Optional[np.ndarray] = None  # (N, 2 + C): video index, view index, logits
    non_finite_views: Optional[torch.Tensor] = None  # (V,) views whose logits held NaN or inf

    @property
    def readable(self) -> torch.Tensor:
        return self.view_counts > 0

    @property
    def non_finite(self) -> torch.Tensor:
        """``(V,)`` bool: readable videos with a view whose logits held NaN or inf."""
        if self.non_finite_views is None:
            return torch.zeros_like(self.readable)
        return self.readable & (self.non_finite_views > 0)

    @property
    def scored(self) -> torch.Tensor:
        """``(V,)`` bool: the videos every accuracy counts (readable, all logits finite)."""
        return self.readable & ~self.non_finite

    def metrics(self, class_names: List[str]) -> Dict[str, object]:
        """Clip- and video-level accuracy over the scored videos (NaN if there are none); views
        and videos with non-finite logits are counted apart, never scored."""
        ok = self.scored
        scores, labels = self.video_scores[ok], self.video_labels[ok]
        nan = float("nan")
        bad_views = 0 if self.non_finite_views is None else int(self.non_finite_views.sum())
        out: Dict[str, object] = {
            "num_videos": int(ok.sum()),
            "num_unreadable": int((~self.readable).sum()),
            "num_non_finite": int(self.non_finite.sum()),
            "num_non_finite_views": bad_views,
            "num_clips": self.num_clips,
            "clip_top1": self.clip_hits[1] / self.num_clips if self.num_clips else nan,
            "clip_top5": self.clip_hits[5] / self.num_clips if self.num_clips else nan,
        }
        if len(labels):
            hits = topk_correct(scores, labels, (1, 5))
            conf = confusion_matrix(scores.argmax(dim=1), labels, len(class_names))
            out.update(
                video_top1=hits[1].double().mean().item(),
                video_top5=hits[5].double().mean().item(),
                mean_class_accuracy=mean_class_accuracy(conf),
                balanced_accuracy=balanced_accuracy(conf),
                macro_f1=macro_f1(conf),
            )
        else:
            out.update(video_top1=nan, video_top5=nan, mean_class_accuracy=nan, balanced_accuracy=nan, macro_f1=nan)
        return out


def _check_each_view_once(seen: np.ndarray, expected: int) -> None:
    """``seen``: (N, 2) (video, view) pairs scored by all ranks; each must appear exactly once."""
    if not len(seen):
        return
    keys, counts = np.unique(seen, axis=0, return_counts=True)
    if (counts > 1).any():
        raise RuntimeError(
            f"{int((counts > 1).sum())} (video, view) pairs were scored more than once: "
            "the test loader's sampler must split the views disjointly across processes"
        )
    if len(keys) != expected:
        raise RuntimeError(f"the test loader yielded {len(keys)} views, expected {expected}")


def _merge_views(gathered: List[ViewTally]) -> Tuple[Dict[int, List[Tuple[int, str]]], Optional[np.ndarray]]:
    """(video index -> [(view index, error)] of views that did not decode, every rank's view logits
    sorted by (video, view) or None if none were kept)."""
    failed_views: Dict[int, List[Tuple[int, str]]] = {}
    for g in gathered:
        for v, view, err in g.failed:
            failed_views.setdefault(v, []).append((view, err))
    parts = [g.logits for g in gathered if g.logits is not None]
    if not parts:
        return failed_views, None
    view_logits = np.concatenate(parts)
    return failed_views, view_logits[np.lexsort((view_logits[:, 1], view_logits[:, 0]))]


@torch.inference_mode()
def score_multiview(
    model: torch.nn.Module,
    loader,
    num_videos: int,
    num_classes: int,
    normalize: DeviceNormalizer,
    aggregation: str = "softmax",
    save_logits: bool = False,
    device: torch.device = torch.device("cpu"),
    num_views: Optional[int] = None,
    amp: Optional[torch.dtype] = None,
) -> MultiViewResult:
    """Score every view of every video in ``loader`` and aggregate per video.

    Args:
        loader: test loader (items carry ``video_index`` in ``[0, num_videos)``, ``view_index``,
            ``valid``/``error``); each process iterates its own disjoint shard.
        aggregation: ``softmax`` (mean of probabilities) | ``sum`` (of logits) | ``max`` (of probabilities).
        num_views: views expected per video; if given, a (video, view) scored twice raises (a
            padding sampler would bias the result).
    Views whose logits hold NaN or inf count in ``non_finite_views`` of their video, not in the
    clip accuracy (``num_clips``); their video is left out of the video accuracy.
    """
    net = unwrap_model(model).eval()
    agg = VideoAggregator(num_videos, num_classes, aggregation)
    labels = torch.full((num_videos,), -1, dtype=torch.int64)
    hit1 = hit5 = clips = 0
    non_finite = torch.zeros(num_videos, dtype=torch.int64)
    failed: List[Tuple[int, int, str]] = []
    seen: List[np.ndarray] = []
    logit_rows: List[np.ndarray] = []
    for batch, valid, logits in _scored_batches(net, loader, device, normalize, amp, "test"):
        vidx, view = batch["video_index"].long(), batch["view_index"].long()
        labels[vidx] = batch["label"].long()
        seen.append(np.stack([vidx.numpy(), view.numpy()], axis=1))
        errors = batch.get("error", [""] * len(valid))
        failed += [(int(vidx[i]), int(view[i]), str(errors[i])) for i in torch.nonzero(~valid).flatten().tolist()]
        if logits is None:
            continue
        y, bad = batch["label"][valid].long(), non_finite_rows(logits)
        hits = topk_correct(logits[~bad], y[~bad], (1, 5))
        hit1, hit5, clips = hit1 + int(hits[1].sum()), hit5 + int(hits[5].sum()), clips + int((~bad).sum())
        non_finite.index_add_(0, vidx[valid][bad], torch.ones(int(bad.sum()), dtype=torch.int64))
        agg.update(logits, vidx[valid])
        if save_logits:
            logit_rows.append(
                np.concatenate([vidx[valid, None].numpy(), view[valid, None].numpy(), logits.numpy()], axis=1).astype(
                    np.float32
                )
            )
    agg.all_reduce()
    all_reduce_(labels, "max")
    all_reduce_(non_finite, "sum")
    local_seen = np.concatenate(seen) if seen else np.zeros((0, 2), np.int64)
    local_logits = np.concatenate(logit_rows) if logit_rows else None
    gathered = all_gather_object(ViewTally(hit1, hit5, clips, failed, local_seen, local_logits))
    if num_views is not None:
        _check_each_view_once(np.concatenate([g.seen for g in gathered]), num_videos * num_views)
    failed_views, view_logits = _merge_views(gathered)
    return MultiViewResult(
        video_scores=agg.video_scores(),
        video_labels=labels,
        view_counts=agg.counts,
        clip_hits={1: sum(g.hit1 for g in gathered), 5: sum(g.hit5 for g in gathered)},
        num_clips=sum(g.clips for g in gathered),
        failed_views=failed_views,
        view_logits=view_logits,
        non_finite_views=non_finite,
    )
