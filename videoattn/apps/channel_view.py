"""The channel-attention view of ``tools/visualize_attention.py``, for one CBAM block:

* the channel weights over frames as a heatmap: rows are the block's channels sorted by their mean
  weight over frames (largest at the top), columns the block's frames;
* the spatial activation of the top-k emphasised channels (the k largest mean weights) on the
  clip's frames: the block's CBAM output (the gated residual branch, before the residual add);
* faithfulness: the predicted class's probability with those k channels zeroed at that output,
  against k channels drawn uniformly at random from all C (mean and sample std over seeded draws),
  and unablated. A channel the gate emphasises should matter more than a random one.

The second figure of the tool (``fig.channels.png`` beside ``fig.png``); its numbers go to the
tool's JSON (:meth:`ChannelView.as_json`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import numpy as np
import torch

from videoattn.models import capture_channels, zero_channels
from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.io import atomic_path

if TYPE_CHECKING:  # the type only: visualize.py imports this module
    from videoattn.apps.visualize import AttentionResult


class NoChannelView(OneLineError):
    """The chosen block has no channel weights to show; the tool prints the line and draws the rest."""

    prefix = "note"


@dataclass
class Faithfulness:
    """The predicted class's probability, unablated and with channels of one block zeroed."""

    target: int  # the predicted class (argmax of the unablated logits)
    probability: float  # its probability, unablated (a pass of its own, batch of 1)
    top_k: float  # ... with the top-k emphasised channels zeroed
    random: List[float]  # ... with k random channels zeroed, one value per draw
    seed: int  # of the random draws

    def as_json(self) -> dict:
        r = np.asarray(self.random, dtype=np.float64)
        mean, std = float(r.mean()), float(r.std(ddof=1)) if len(r) > 1 else None
        return {
            "predicted_class": self.target,
            "probability": self.probability,
            "top_k_zeroed": self.top_k,
            "random_k_zeroed_mean": mean,
            "random_k_zeroed_std": std,
            "random_draws": len(r),
            "random_seed": self.seed,
            "drop_top_k": self.probability - self.top_k,
            "drop_random_k_mean": self.probability - mean,
        }


@dataclass
class ChannelView:
    key: str  # the CBAM block, e.g. res3.1.cbam
    weights: np.ndarray  # (C, T_c) channel weights in (0, 1)
    order: np.ndarray  # (C,) channel indices by mean weight over frames, largest first
    top_maps: np.ndarray  # (k, T_c, h, w) CBAM output of the top-k channels (order[:k])
    faithfulness: Optional[Faithfulness]  # None: the logits were not finite (see ``note``)
    note: str = ""

    @property
    def top(self) -> List[int]:
        return self.order[: len(self.top_maps)].tolist()

    def as_json(self) -> dict:
        mean = self.weights.mean(axis=1)
        return {
            "block": self.key,
            "channels": int(self.weights.shape[0]),
            "frames": int(self.weights.shape[1]),
            "top_channels": self.top,
            "top_mean_weights": [float(mean[c]) for c in self.top],
            "mean_weight_all_channels": float(mean.mean()),
            "faithfulness": self.faithfulness.as_json() if self.faithfulness else None,
            **({"faithfulness_note": self.note} if self.note else {}),
        }


def random_channel_sets(channels: int, k: int, draws: int, seed: int) -> List[List[int]]:
    """``draws`` sets of ``k`` distinct channels out of ``channels``, uniform, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(channels, generator=g)[:k].tolist() for _ in range(draws)]


@torch.inference_mode()
def ablated_probabilities(
    model: torch.nn.Module, clip: torch.Tensor, key: str, drop: Sequence[Sequence[int]], target: int, batch: int = 8
) -> np.ndarray:
    """``(len(drop),)``: the probability of class ``target`` for ``clip: (3, T, H, W)`` with channels
    ``drop[i]`` of block ``key`` zeroed, ``batch`` copies of the clip per forward pass."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(drop), batch):
        part = list(drop[i : i + batch])
        with zero_channels(model, key, part):
            logits = model(clip[None].expand(len(part), *clip.shape).to(device))
        out.append(logits.float().softmax(1)[:, target].cpu())
    return torch.cat(out).numpy()


@torch.inference_mode()
def compute_channel_view(
    model: torch.nn.Module, clip: torch.Tensor, key: str, k: int = 4, draws: int = 20, seed: int = 0
) -> ChannelView:
    """The view of CBAM block ``key`` for ``clip: (3, T, H, W)`` (normalised); NoChannelView if the
    block has no channel gate or its weights are not finite; UsageError if ``k`` does not fit its
    channels or ``draws`` < 2."""
    if draws < 2:
        raise UsageError(f"--random-draws {draws}: the random baseline needs at least 2 draws (a mean and a std)")
    device = next(model.parameters()).device
    with capture_channels(model, outputs=[key]) as found:
        logits = model(clip[None].to(device))[0].float()
    weights = found[key].weights
    if weights is None:
        raise NoChannelView(f"{key} has no channel gate: no channel view (the other pictures are drawn)")
    weights = weights[0].float().cpu().numpy()
    if not np.isfinite(weights).all():  # no order of channels, no top k: nothing computed from them is shown
        raise NoChannelView(f"{key} has NaN or inf channel weights: no channel view (the other pictures are drawn)")
    if not 1 <= k <= weights.shape[0]:
        raise UsageError(f"--top-channels {k}: {key} has {weights.shape[0]} channels; choose 1..{weights.shape[0]}")
    order = np.argsort(-weights.mean(axis=1), kind="stable")
    top_maps = found[key].output[0, order[:k].tolist()].float().cpu().numpy()
    if not torch.isfinite(logits).all():
        note = "NaN or inf logits: no faithfulness numbers"
        return ChannelView(key, weights, order, top_maps, None, note)
    probs = logits.softmax(0)
    target = int(probs.argmax())
    drop = [order[:k].tolist()] + random_channel_sets(weights.shape[0], k, draws, seed)
    p = ablated_probabilities(model, clip, key, drop, target)
    if not np.isfinite(p).all():
        note = f"NaN or inf logits with channels of {key} zeroed: no faithfulness numbers"
        return ChannelView(key, weights, order, top_maps, None, note)
    faith = Faithfulness(target, float(probs[target]), float(p[0]), p[1:].tolist(), seed)
    return ChannelView(key, weights, order, top_maps, faith)


def overlay(ax, frame: np.ndarray, heat: np.ndarray, cmap: str, limits: Tuple[float, float]):
    """``frame: (H, W, 3)`` in grey under ``heat: (H, W)`` (so the colours read as the map only); the heat image."""
    ax.imshow(frame.mean(axis=2), cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    return ax.imshow(heat, cmap=cmap, alpha=0.6, vmin=limits[0], vmax=limits[1], interpolation="bilinear")


def _block_frame_labels(res: "AttentionResult", t_c: int) -> List[str]:
    """The start time of each of the block's ``t_c`` frames: its first input frame (nearest, as ``upsampled``)."""
    T = res.frames.shape[0]
    first = [min(i for i in range(T) if i * t_c // T == j) for j in range(t_c)]
    return [f"{res.frame_times[i]:.2f} s" for i in first]


def _heatmap(fig, res: "AttentionResult", view: ChannelView) -> None:
    """Channels (sorted, largest mean weight at the top) x block frames, the top-k marked."""
    ax = fig.subplots()
    C, t_c = view.weights.shape
    k = len(view.top_maps)
    lo, hi = float(view.weights.min()), float(view.weights.max())  # the data's range: changes over frames show
    lo, hi = (lo, hi) if hi - lo > 1e-3 else (0.0, 1.0)
    im = ax.imshow(view.weights[view.order], aspect="auto", cmap="magma", interpolation="nearest", vmin=lo, vmax=hi)
    ax.set_xticks(range(t_c), _block_frame_labels(res, t_c), fontsize=7)
    ax.set_yticks(sorted({0, k - 1, C - 1}), [str(r + 1) for r in sorted({0, k - 1, C - 1})], fontsize=7)
    ax.axhline(k - 0.5, color="cyan", lw=1.2)
    ax.text(t_c - 0.45, k / 2 - 0.5, f" top {k}", color="cyan", fontsize=7, va="center", ha="left", clip_on=False)
    ax.set_ylabel(f"rank of {C} channels\nby mean weight", fontsize=8)
    ax.set_xlabel("block frame (start time)", fontsize=8)
    ax.set_title(f"channel weights of {view.key} per frame", fontsize=9)
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.04)
    cb.ax.tick_params(labelsize=7)
    cb.set_label("channel weight", fontsize=7)


def _top_channel_rows(fig, res: "AttentionResult", view: ChannelView, columns: Sequence[int]) -> None:
    """Row 0: the input frames; then one row per top-k channel: its CBAM output on the frames
    (signed, colour range symmetric per channel), the channel's weight at that frame in the corner."""
    n, T, t_c = len(columns), res.frames.shape[0], view.weights.shape[1]
    kw = {"width_ratios": [1] * n + [0.07], "wspace": 0.04, "hspace": 0.1}
    axes = fig.subplots(len(view.top_maps) + 1, n + 1, gridspec_kw=kw, squeeze=False)
    for c, t in enumerate(columns):
        axes[0, c].imshow(res.frames[t], interpolation="bilinear")
        axes[0, c].set_title(f"frame {t}  ({res.frame_times[t]:.2f} s)", fontsize=8)
    axes[0, 0].set_ylabel("input", fontsize=9)
    axes[0, -1].axis("off")
    mean = view.weights.mean(axis=1)
    for r, (ch, maps) in enumerate(zip(view.top, view.top_maps), start=1):
        heat = res.upsampled(maps)
        lim = max(float(np.abs(heat).max()), 1e-6)
        for c, t in enumerate(columns):
            im = overlay(axes[r, c], res.frames[t], heat[t], "RdBu_r", (-lim, lim))
            w = view.weights[ch, t * t_c // T]
            axes[r, c].text(0.03, 0.04, f"w {w:.2f}", transform=axes[r, c].transAxes, fontsize=6, color="white")
        axes[r, 0].set_ylabel(f"ch {ch}\nmean w {mean[ch]:.2f}", fontsize=8)
        cb = fig.colorbar(im, cax=axes[r, -1])
        cb.ax.tick_params(labelsize=6)
        cb.set_label("activation", fontsize=6)
    for ax in axes[:, :-1].flat:
        ax.set_xticks([])
        ax.set_yticks([])


def faithfulness_line(view: ChannelView, class_name: str) -> str:
    """One line for the figure: the probabilities unablated, top-k zeroed, k random zeroed."""
    if view.faithfulness is None:
        return view.note
    f = view.faithfulness.as_json()
    return (
        f"p({class_name}) = {f['probability']:.5f}; {len(view.top_maps)} top channels zeroed: {f['top_k_zeroed']:.5f}; "
        f"{len(view.top_maps)} random zeroed: {f['random_k_zeroed_mean']:.5f} ± {f['random_k_zeroed_std']:.5f} "
        f"({f['random_draws']} draws)"
    )


def render_channels(
    res: "AttentionResult",
    view: ChannelView,
    path: str,
    columns: Sequence[int],
    title: str = "",
    class_name: str = "",
    dpi: int = 200,
) -> None:
    """The channel figure: the weight heatmap above the top-k channels' maps on the frames
    ``columns`` (input-frame indices), written atomically; format by the extension of ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, W = res.frames.shape[1:3]
    n, rows = len(columns), len(view.top_maps) + 1
    grid_h = 1.6 * rows * H / W
    fig = plt.figure(figsize=(1.6 * n + 1.2, 2.8 + grid_h + 0.9), dpi=dpi)
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.8, grid_h])
    _heatmap(top, res, view)
    top.subplots_adjust(top=0.9, bottom=0.2)
    _top_channel_rows(bottom, res, view, columns)
    bottom.subplots_adjust(top=0.96, bottom=0.02)
    text = "\n".join(x for x in (title, faithfulness_line(view, class_name)) if x)
    fig.suptitle(text, fontsize=9, y=1.0, va="bottom")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format=os.path.splitext(path)[1].lstrip(".") or "png")
    plt.close(fig)
