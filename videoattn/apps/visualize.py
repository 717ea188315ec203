"""Attention pictures (what ``tools/visualize_attention.py`` runs): for one clip of one video,

* row 1: the input frames (exactly what the model sees: ``data.protocol``'s single test view, de-normalised),
  the query point marked;
* row 2: the CBAM spatial attention of one block, over every frame;
* row 3: the non-local attention of the query point ``(frame, y, x)`` over all frames,
  in multiples of uniform attention (1 = every key position weighted 1/M);

as a PNG grid (and optionally an animated GIF, one panel triple per frame); then the channel view of
one CBAM block as a second figure (:mod:`videoattn.apps.channel_view`) and a JSON of the prediction
and the channel view's faithfulness numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from videoattn.apps.channel_view import ChannelView, NoChannelView, compute_channel_view, overlay, render_channels
from videoattn.config import Config, DataConfig
from videoattn.data.decoding import config_backend, open_video
from videoattn.data.protocols import ClipSpec, Protocol
from videoattn.data.transforms import to_clip, to_tchw
from videoattn.engine.inference import class_names_for
from videoattn.engine.session import one_process_session
from videoattn.evaluation.metrics import NonFiniteError
from videoattn.models import capture_attention, cbam_blocks
from videoattn.utils.errors import UsageError
from videoattn.utils.io import atomic_path, atomic_write_json
from videoattn.utils.outputs import claim_files


@dataclass
class AttentionResult:
    frames: np.ndarray  # (T, H, W, 3) float in [0, 1], as seen by the model
    frame_times: List[float]  # (T,) seconds in the video
    cbam_key: Optional[str]  # None: the model has no CBAM
    cbam: Optional[np.ndarray]  # (T_c, h, w) spatial attention in [0, 1]
    nl_key: Optional[str]  # None: the model has no non-local block
    nl: Optional[np.ndarray]  # (T', h', w') weights of the query over the keys (sum 1)
    query: Tuple[int, float, float]  # (frame index, y, x), y and x as fractions
    probs: np.ndarray  # (C,) softmax of the clip's logits

    def upsampled(self, maps: np.ndarray) -> np.ndarray:
        """``maps (t, h, w)`` -> ``(T, H, W)``: nearest in time (frame i -> slice i * t // T), bilinear in space."""
        T, H, W = self.frames.shape[:3]
        m = torch.from_numpy(maps).float()[[i * maps.shape[0] // T for i in range(T)]]
        return F.interpolate(m[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0].numpy()


def pick_key(keys: Sequence[str], layer: str, kind: str) -> Optional[str]:
    """The map key for ``layer``: an exact key (``res3.1.cbam``) or a stage (``res3``: its last block).

    None if the model has no ``kind`` block at all; ValueError if it has some, elsewhere."""
    kinds = sorted((k for k in keys if k.endswith("." + kind)), key=lambda k: (k.split(".")[0], int(k.split(".")[1])))
    if not kinds:
        return None
    if layer in kinds:
        return layer
    match = [k for k in kinds if k.split(".")[0] == layer]
    if not match:
        raise UsageError(f"no {kind} attention at '{layer}'; this model has: {', '.join(kinds)}")
    return match[-1]


@torch.inference_mode()
def compute_attention(
    model: torch.nn.Module,
    clip: torch.Tensor,
    query: Tuple[int, float, float],
    cbam_layer: str,
    nl_layer: str,
    mean: Sequence[float],
    std: Sequence[float],
    frame_times: Sequence[float],
) -> AttentionResult:
    """Run ``clip: (3, T, H, W)`` (normalised) once and collect both maps for ``query``."""
    T = clip.shape[1]
    frame, qy, qx = query
    if not (0 <= frame < T and 0 <= qy <= 1 and 0 <= qx <= 1):
        raise UsageError(f"query (frame, y, x) = {query}: frame must be in [0, {T}), y and x in [0, 1]")
    device = next(model.parameters()).device
    with capture_attention(model, queries=[((frame + 0.5) / T, qy, qx)]) as maps:
        logits = model(clip[None].to(device))
    cbam_key = pick_key(list(maps), cbam_layer, "cbam")
    nl_key = pick_key(list(maps), nl_layer, "nonlocal")
    if cbam_key is None and nl_key is None:
        raise UsageError("this model has neither CBAM nor non-local blocks: nothing to visualise")
    m = torch.tensor(mean)[:, None, None, None]
    s = torch.tensor(std)[:, None, None, None]
    frames = (clip.cpu() * s + m).clamp(0, 1).permute(1, 2, 3, 0).numpy()
    return AttentionResult(
        frames=frames,
        frame_times=list(frame_times),
        query=(int(frame), float(qy), float(qx)),
        cbam_key=cbam_key,
        cbam=maps[cbam_key][0].float().cpu().numpy() if cbam_key else None,
        nl_key=nl_key,
        nl=maps[nl_key][0, 0].float().cpu().numpy() if nl_key else None,
        probs=logits[0].float().softmax(0).cpu().numpy(),
    )


def _limits(maps: np.ndarray, lo: float, hi: float) -> Tuple[float, float]:
    """Colour range: the data's own range for contrast, or ``[lo, hi]`` if the map is flat."""
    vmin, vmax = float(maps.min()), float(maps.max())
    return (vmin, vmax) if vmax - vmin > 1e-3 else (lo, hi)


@dataclass
class _Row:
    label: str  # row label (grid) / panel title prefix (GIF)
    heat: Optional[np.ndarray]  # (T, H, W) overlay, None for the plain frames
    cmap: str = ""
    limits: Tuple[float, float] = (0.0, 1.0)
    unit: str = ""  # colour-bar label
    marks_query: bool = False


def _rows(res: AttentionResult) -> List[_Row]:
    """Input frames, then CBAM and non-local overlays for the maps the model has."""
    rows = [_Row("input", None, marks_query=res.nl is not None)]
    if res.cbam is not None:
        cbam = res.upsampled(res.cbam)
        rows.append(_Row(f"CBAM\n{res.cbam_key}", cbam, "inferno", _limits(cbam, 0.0, 1.0), "spatial weight"))
    if res.nl is not None:
        nl = res.upsampled(res.nl * res.nl.size)  # in multiples of uniform attention
        rows.append(
            _Row(
                f"non-local\n{res.nl_key}",
                nl,
                "viridis",
                (0.0, max(float(nl.max()), 1.0)),
                "weight / uniform",
                marks_query=True,
            )
        )
    return rows


def _draw(ax, res: AttentionResult, row: _Row, t: int, highlight: bool = True):
    """One frame of one row on ``ax``; returns the overlay image (for a colour bar) or None."""
    H, W = res.frames.shape[1:3]
    im = None
    if row.heat is None:
        ax.imshow(res.frames[t], interpolation="bilinear")
    else:
        im = overlay(ax, res.frames[t], row.heat[t], row.cmap, row.limits)
    qf, qy, qx = res.query
    if row.marks_query and t == qf:
        ax.plot(qx * (W - 1), qy * (H - 1), marker="+", color="red", markersize=14, mew=2.5)
        ax.plot(qx * (W - 1), qy * (H - 1), marker="o", mfc="none", mec="white", markersize=12, mew=1.2)
        if highlight:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _columns(T: int, max_columns: int, query_frame: int) -> List[int]:
    """Up to ``max_columns`` evenly spread frames, always including the query frame."""
    cols = sorted(set(np.linspace(0, T - 1, min(T, max_columns)).round().astype(int).tolist()))
    if query_frame not in cols:
        keep = cols[:-1] if len(cols) >= max_columns else cols
        cols = sorted(set(keep) | {query_frame})
    return cols


def render_grid(res: AttentionResult, path: str, title: str = "", max_columns: int = 8, dpi: int = 200) -> None:
    """Figure with one row per map (frames / CBAM / non-local) and colour bars, written atomically.

    The format follows the extension of ``path`` (png, pdf, svg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(res.frames.shape[0], max_columns, res.query[0])
    rows = _rows(res)
    H, W = res.frames.shape[1:3]
    n = len(cols)
    fig, axes = plt.subplots(
        len(rows),
        n + 1,
        figsize=(1.9 * n + 0.9, 1.9 * len(rows) * H / W + 0.9),
        dpi=dpi,
        gridspec_kw={"width_ratios": [1] * n + [0.07], "wspace": 0.04, "hspace": 0.12},
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, t in enumerate(cols):
            im = _draw(axes[r, c], res, row, t)
            if r == 0:
                axes[r, c].set_title(f"frame {t}  ({res.frame_times[t]:.2f} s)", fontsize=8)
        axes[r, 0].set_ylabel(row.label, fontsize=9)
        if row.heat is None:
            axes[r, -1].axis("off")
        else:
            cb = fig.colorbar(im, cax=axes[r, -1])
            cb.ax.tick_params(labelsize=7)
            cb.set_label(row.unit, fontsize=7)
    qf, qy, qx = res.query
    query_text = f"non-local query: frame {qf}, y={qy:.2f}, x={qx:.2f} (red +)" if res.nl is not None else ""
    fig.suptitle("\n".join(x for x in (title, query_text) if x), fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, bbox_inches="tight", format=os.path.splitext(path)[1].lstrip(".") or "png")
    plt.close(fig)


def render_gif(res: AttentionResult, path: str, fps: float = 4.0, dpi: int = 100) -> None:
    """Animated GIF, one frame per input frame, the rows of :func:`render_grid` side by side
    (colour scales fixed over the clip)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    H, W = res.frames.shape[1:3]
    rows = _rows(res)
    images = []
    for t in range(res.frames.shape[0]):
        fig, axes = plt.subplots(1, len(rows), figsize=(2.5 * len(rows), 2.7 * H / W + 0.5), dpi=dpi, squeeze=False)
        for ax, row in zip(axes[0], rows):
            _draw(ax, res, row, t, highlight=False)
            name = f"frame {t} ({res.frame_times[t]:.2f} s)" if row.heat is None else row.label.replace("\n", " ")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
        plt.close(fig)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def load_clip(data: DataConfig, video: str, start_s: Optional[float] = None) -> Tuple[torch.Tensor, List[float]]:
    """One test clip ``(3, T, H, W)`` (normalised) of ``video`` and its frame times (s), sampled and
    cropped as ``data.protocol`` tests with one view and one crop.

    ``start_s`` None: that single test view's clip (pyslowfast: the first clip; mmaction2 and
    videoattn: the centre one); else the clip starting at that time (as a feature window does);
    past the video's end: ValueError naming its duration."""
    protocol, spec = Protocol.from_data(data), ClipSpec.from_data(data, 1, 1)
    protocol.check(spec, "test")
    reader = open_video(video, num_threads=data.decode_threads, backend=config_backend(data))
    try:
        n, fps = reader.num_frames, reader.fps
        if start_s is not None and not 0 <= start_s < n / fps:
            raise UsageError(f"--start {start_s:g} s is outside {video} ({n / fps:.2f} s long)")
        if start_s is None:
            idx = protocol.test_indices(n, fps, 0, spec)
        else:
            idx = protocol.fit(protocol.window_indices(int(round(start_s * fps)), fps, spec), n)
        frames = reader.get_frames(idx.tolist())
    finally:
        reader.close()
    clip = to_clip(protocol.test_crop(protocol.test_resize(to_tchw(frames), spec), 0, spec), data)
    return clip, [i / fps for i in idx.tolist()]


@dataclass
class ChannelOptions:
    """The channel view: ``--channel-layer``, ``--top-channels``, ``--random-draws``."""

    layer: str = ""  # a stage (its last CBAM block) or a key like res3.1.cbam; "" -> the CBAM layer
    top: int = 4  # k: the emphasised channels shown and zeroed
    draws: int = 20  # random k-channel sets of the faithfulness baseline
    seed: int = 0  # of those draws


@dataclass
class Visualized:
    """What :func:`visualize_video` computed and wrote."""

    attention: AttentionResult
    channels: Optional[ChannelView]  # None: see ``note``
    note: str  # why there is no channel view (one line), or ""
    written: List[str]  # the files, in the order written


def companion_paths(output: str) -> Tuple[str, str]:
    """The channel figure and the JSON beside the picture: ``fig.png`` -> ``fig.channels.png``, ``fig.json``."""
    root, ext = os.path.splitext(output)
    return f"{root}.channels{ext or '.png'}", f"{root}.json"


def channel_view_of(
    model: torch.nn.Module, clip: torch.Tensor, layer: str, opts: ChannelOptions
) -> Tuple[Optional[ChannelView], str]:
    """The channel view of the CBAM block ``layer`` names, or None and one line saying why there is none."""
    key = pick_key(list(cbam_blocks(model)), layer, "cbam")
    if key is None:
        return None, "this model has no CBAM block: no channel view (the other pictures are drawn)"
    try:
        return compute_channel_view(model, clip, key, opts.top, opts.draws, opts.seed), ""
    except NoChannelView as e:
        return None, str(e)


def summary(res: AttentionResult, names: Sequence[str], video: str, source: str, out: Visualized) -> dict:
    """The tool's JSON: the prediction (top 5; None if the logits are not finite) and the channel view."""
    finite = bool(np.isfinite(res.probs).all())
    top = np.argsort(-res.probs)[:5].tolist() if finite else []
    return {
        "video": video,
        "weights": source,
        "frame_times": res.frame_times,
        "prediction": [{"class": names[i], "index": i, "probability": float(res.probs[i])} for i in top] or None,
        "cbam_block": res.cbam_key,
        "nonlocal_block": res.nl_key,
        "nonlocal_query": list(res.query),
        "channel_view": out.channels.as_json() if out.channels else None,
        **({"channel_view_note": out.note} if out.note else {}),
        **({"prediction_note": "NaN or inf logits: no prediction"} if not finite else {}),
    }


def _title(video: str, names: Sequence[str], probs: np.ndarray) -> str:
    if not np.isfinite(probs).all():
        return f"{os.path.basename(video)} — NaN or inf logits: no prediction"
    pred = ", ".join(f"{names[i]} {probs[i]:.0%}" for i in np.argsort(-probs)[:2])
    return f"{os.path.basename(video)} — predicted: {pred}"


def visualize_video(
    cfg: Config,
    checkpoint: Optional[str],
    video: str,
    output: str,
    query: Optional[Tuple[int, float, float]] = None,
    cbam_layer: str = "res3",
    nl_layer: str = "res3",
    gif: Optional[str] = None,
    start_s: Optional[float] = None,
    max_columns: int = 8,
    trust: bool = False,
    pretrained: str = "",
    channels: Optional[ChannelOptions] = None,
) -> Visualized:
    """Load the model and one clip of ``video``; write the PNG grid (and GIF), the channel figure
    and the JSON (:func:`companion_paths`). ``query`` None: the centre of the middle frame."""
    session = one_process_session(cfg, precision=None)  # the device decisions; it does not autocast
    cfg, opts = session.cfg, channels or ChannelOptions()
    model, weights = session.load_model(checkpoint, trust=trust, pretrained=pretrained)
    clip, times = load_clip(cfg.data, video, start_s)
    if query is None:
        query = (clip.shape[1] // 2, 0.5, 0.5)
    res = compute_attention(model, clip, query, cbam_layer, nl_layer, cfg.data.mean, cfg.data.std, times)
    view, note = channel_view_of(model, clip, opts.layer or cbam_layer, opts)
    names = class_names_for(cfg.data, cfg.model.num_classes, weights.classes)
    channel_png, json_path = companion_paths(output)
    files = [output] + ([gif] if gif else []) + ([channel_png] if view else []) + [json_path]
    claim_files("visualize_attention", {f: "use another --gif" if f == gif else "use another --output" for f in files})
    title = _title(video, names, res.probs)
    render_grid(res, output, title=title, max_columns=max_columns)
    if gif:
        render_gif(res, gif, fps=max(1.0, cfg.data.target_fps / cfg.data.sampling_rate))
    out = Visualized(res, view, note, files)
    if view:
        cls = names[view.faithfulness.target] if view.faithfulness else ""
        render_channels(res, view, channel_png, _columns(len(times), max_columns, query[0]), title, cls)
    atomic_write_json(json_path, summary(res, names, video, weights.source, out))
    if not np.isfinite(res.probs).all():
        raise NonFiniteError(f"{video}: NaN or inf logits; wrote {', '.join(files)} with no prediction or faithfulness")
    return out
