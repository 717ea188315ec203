"""Predictions for videos without labels (what ``tools/predict.py`` runs).

Per video (``<id>``: :func:`videoattn.apps.inputs.video_ids`):

* the top-k classes and scores from exactly the views ``test_net`` scores: the test dataset's
  ``test.num_ensemble_views`` x ``test.num_spatial_crops`` views, aggregated by ``test.aggregation``
  (:func:`videoattn.evaluation.tester.score_test_views`; whatever sampling the dataset does, predict does);
* for a video longer than one clip, a timeline: the class probabilities of the sliding windows
  of feature extraction (:class:`videoattn.data.windows.WindowStream`: ``features.stride_seconds``
  or ``stride_frames``, ``features.num_spatial_crops`` crops averaged) and the segments where the
  top label changes (:mod:`videoattn.apps.timeline`);
* with ``render``: ``<id>.mp4``, the video with the current top-3 drawn on every frame, and
  ``<id>_timeline.png`` (:mod:`videoattn.apps.render`); a video no longer than a clip shows its
  video-level top-3 throughout.

Files in the output folder (written atomically): ``predictions.csv``, ``predictions.json``,
``timeline.csv`` (one row per window and rank), ``segments.csv``, ``failed.csv`` (videos that could
not be decoded or are missing, with the reason; never fatal) and ``predict_run.json`` (which
weights and inputs this folder holds predictions of: a run with others is refused). A file of one
of these names (or ``<id>.mp4`` / ``<id>_timeline.png`` with ``render``) that predict did not write
is never replaced: the run is refused before it writes anything (:mod:`videoattn.utils.outputs`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from videoattn.apps.exported import apply_record, load_onnx_model
from videoattn.apps.extract import window_loader
from videoattn.apps.inputs import list_inputs, video_ids
from videoattn.apps.render import render_timeline, render_video
from videoattn.apps.timeline import WindowTopK, segments, timeline_rows, window_topk
from videoattn.config import Config
from videoattn.data.annotations import Annotations
from videoattn.data.dataset import VideoClipDataset
from videoattn.data.windows import WindowChunk, WindowError, per_video
from videoattn.engine.inference import class_names_for
from videoattn.engine.session import RunSession, one_process_session
from videoattn.evaluation.metrics import NonFiniteError, non_finite_rows
from videoattn.evaluation.tester import score_test_views
from videoattn.utils.distributed import launch_world_size
from videoattn.utils.errors import OneLineError, UsageError
from videoattn.utils.io import atomic_write_csv, atomic_write_json
from videoattn.utils.outputs import claim_outputs

log = logging.getLogger(__name__)
RUN_FILE = "predict_run.json"
OUTPUT_FILES = ("predictions.csv", "predictions.json", "timeline.csv", "segments.csv", "failed.csv")


@dataclass
class VideoResult:
    """What predict found for one video."""

    video: str  # output name (<id>)
    path: str
    top: List[Tuple[int, str, float]] = field(default_factory=list)  # video level, best first
    num_views: int = 0  # views that decoded
    failed_views: List[Tuple[int, str]] = field(default_factory=list)
    duration_s: Optional[float] = None  # decoded duration (from the window pass)
    window_s: Optional[float] = None
    windows: List[WindowTopK] = field(default_factory=list)  # sliding windows, best classes first
    error: str = ""  # why there is no prediction ("" = predicted)
    notes: List[str] = field(default_factory=list)  # timeline / render problems (not fatal)
    non_finite_views: int = 0  # views whose logits held NaN or inf (then no prediction)
    non_finite_windows: int = 0  # sliding windows whose scores did (then no timeline)

    @property
    def non_finite(self) -> bool:
        return bool(self.non_finite_views or self.non_finite_windows)

    @property
    def has_timeline(self) -> bool:
        """Longer than one clip, with windows scored."""
        return bool(self.windows) and self.duration_s is not None and self.duration_s > self.window_s + 1e-6


class PredictError(OneLineError):
    """No video could be predicted, or the output folder holds another run's predictions."""


# --------------------------------------------------------------------------------------- scoring
def score_video_level(session: RunSession, model, results: List[VideoResult], names: Sequence[str], k: int) -> None:
    """Fill ``top`` / ``num_views`` / ``error`` of every result from test_net's views."""
    t = session.cfg.test
    ann = Annotations(videos=[(r.path, -1) for r in results], classes=[], source="--input")
    dataset = VideoClipDataset(session.cfg.data, "test", ann, t.num_ensemble_views, t.num_spatial_crops)
    scored = score_test_views(session, model, dataset)
    for v, r in enumerate(results):
        r.failed_views = scored.failed_views.get(v, [])
        r.num_views = int(scored.view_counts[v])
        if not bool(scored.readable[v]):
            r.error = "; ".join(sorted({e for _, e in r.failed_views})) or "no view could be decoded"
            continue
        if bool(scored.non_finite[v]):
            r.non_finite_views = int(scored.non_finite_views[v])
            r.error = f"NaN or inf logits in {r.non_finite_views} of {r.num_views} views: not predicted"
            continue
        top = scored.video_scores[v].float().topk(k)
        r.top = [(i, names[i], float(s)) for i, s in zip(top.indices.tolist(), top.values.tolist())]


def window_probs(session: RunSession, model, chunk: WindowChunk) -> torch.Tensor:
    """Class probabilities of a chunk's windows, its crops averaged: ``(w * crops, 3, T, S, S) -> (w, C)``.
    Only ``model(x)`` (logits), so a PyTorch model and an exported one go through the same steps."""
    x = session.normalize(chunk.clips, session.device)
    with torch.autocast(session.device.type, dtype=session.amp, enabled=session.amp is not None):
        logits = model(x)
    probs = logits.float().softmax(dim=1).cpu()
    return probs.reshape(chunk.num_windows, -1, probs.shape[-1]).mean(dim=1)


@torch.inference_mode()
def score_windows(session: RunSession, model, results: List[VideoResult], names: Sequence[str], k: int) -> None:
    """Fill ``windows`` / ``duration_s`` of the predicted results (sliding windows, one pass)."""
    todo = [(j, r.path) for j, r in enumerate(results) if not r.error]
    cfg, device = session.cfg, session.device
    videos = per_video(
        window_loader(todo, cfg.data, cfg.features, device) if todo else [],
        lambda c: window_probs(session, model, c),
    )
    for got in videos:
        r = results[got.k]
        if isinstance(got, WindowError):
            r.notes.append(f"no timeline: {got.error}")
            continue
        win, probs = got.window, torch.cat(got.outputs)  # (W, C)
        r.duration_s, r.window_s = win.num_frames / win.fps, win.window_s
        r.non_finite_windows = int(non_finite_rows(probs).sum())
        if r.non_finite_windows:
            r.notes.append(f"no timeline: NaN or inf scores in {r.non_finite_windows} of {len(probs)} windows")
            continue
        r.windows = window_topk(probs, win.starts, win.ends, names, k)


# ------------------------------------------------------------------------------------- rendering
def render_result(out_dir: str, r: VideoResult) -> None:
    """``<id>.mp4`` and ``<id>_timeline.png`` of a predicted video; a failure becomes a note."""
    if r.duration_s is None:
        r.notes.append("not rendered: the sliding-window pass could not read it")
        return
    windows = (
        r.windows if r.has_timeline else [WindowTopK(0.0, r.duration_s, *map(tuple, zip(*r.top)))]
    )  # short: the video-level top-3 throughout
    try:
        render_video(r.path, windows, os.path.join(out_dir, r.video + ".mp4"), top=3)
        render_timeline(
            windows, os.path.join(out_dir, r.video + "_timeline.png"), r.duration_s, title=os.path.basename(r.path)
        )
    except ValueError as e:
        r.notes.append(f"not rendered: {e}")


# --------------------------------------------------------------------------------------- outputs
def _prediction_rows(results: Sequence[VideoResult], k: int) -> Tuple[List[str], list]:
    header = (
        ["video", "path"]
        + [f"pred{i + 1}" for i in range(k)]
        + [f"score{i + 1}" for i in range(k)]
        + ["num_views", "duration_s", "num_windows", "error", "notes", "non_finite"]
    )
    rows = []
    for r in results:
        top = r.top[:k] + [("", "", None)] * (k - len(r.top[:k]))
        rows.append(
            [r.video, r.path]
            + [t[1] for t in top]
            + ["" if t[2] is None else f"{t[2]:.6g}" for t in top]
            + [
                r.num_views,
                "" if r.duration_s is None else f"{r.duration_s:.3f}",
                len(r.windows) if r.has_timeline else 0,
                r.error,
                "; ".join(r.notes),
                int(r.non_finite),
            ]
        )
    return header, rows


def _segment_dicts(r: VideoResult) -> List[dict]:
    return [
        {
            "start_s": round(s.start_s, 6),
            "end_s": round(s.end_s, 6),
            "index": s.index,
            "label": s.label,
            "score": s.score,
            "max_score": s.max_score,
            "num_windows": s.num_windows,
        }
        for s in segments(r.windows)
    ]


def _video_json(r: VideoResult, k: int) -> dict:
    out = {
        "video": r.video,
        "path": r.path,
        "ok": not r.error,
        "error": r.error,
        "notes": r.notes,
        "top": [{"index": i, "label": n, "score": s} for i, n, s in r.top[:k]],
        "num_views": r.num_views,
        "failed_views": [{"view": v, "error": e} for v, e in r.failed_views],
        "duration_s": r.duration_s,
        "non_finite": r.non_finite,
    }
    if r.has_timeline:
        out.update(window_s=r.window_s, num_windows=len(r.windows), segments=_segment_dicts(r))
    return out


def write_outputs(out_dir: str, results: Sequence[VideoResult], missing: Sequence[str], k: int, run: dict) -> None:
    """predictions.csv/.json, timeline.csv, segments.csv, failed.csv."""
    header, rows = _prediction_rows(results, k)
    atomic_write_csv(os.path.join(out_dir, "predictions.csv"), header, rows)
    timeline = [
        [r.video] + list(row.values())
        for r in results
        if r.has_timeline
        for row in timeline_rows(r.windows)
        if row["rank"] <= k
    ]
    atomic_write_csv(
        os.path.join(out_dir, "timeline.csv"),
        ["video", "window", "start_s", "end_s", "rank", "index", "label", "score"],
        timeline,
    )
    segs = [[r.video, n] + list(s.values()) for r in results if r.has_timeline for n, s in enumerate(_segment_dicts(r))]
    atomic_write_csv(
        os.path.join(out_dir, "segments.csv"),
        ["video", "segment", "start_s", "end_s", "index", "label", "score", "max_score", "num_windows"],
        segs,
    )
    failed = [[r.video, r.path, r.error] for r in results if r.error] + [
        ["", m, "missing: file not found"] for m in missing
    ]
    atomic_write_csv(os.path.join(out_dir, "failed.csv"), ["video", "path", "reason"], failed)
    atomic_write_json(
        os.path.join(out_dir, "predictions.json"),
        dict(
            run,
            videos=[_video_json(r, k) for r in results],
            failed=[{"video": f[0], "path": f[1], "reason": f[2]} for f in failed],
        ),
    )


def format_table(results: Sequence[VideoResult], missing: Sequence[str], k: int, width: int = 26) -> str:
    """The printed summary: one line per video with its top-k, then segments and failures."""

    def cell(text: str) -> str:
        return (text if len(text) <= width else text[: width - 1] + "~").ljust(width)

    name_w = min(max([len(r.video) for r in results] + [5]), 40)
    lines = [cell("video")[:name_w].ljust(name_w) + "  " + "".join(cell(f"top-{i + 1}") for i in range(k))]
    for r in results:
        head = r.video[:name_w].ljust(name_w) + "  "
        lines.append(
            head + ("".join(cell(f"{n} {s:.2f}") for _, n, s in r.top[:k]) if not r.error else f"FAILED: {r.error}")
        )
    for r in results:
        if r.has_timeline and len(r.windows) > 1:
            segs = " | ".join(f"{s.start_s:.2f}-{s.end_s:.2f} s {s.label} {s.score:.2f}" for s in segments(r.windows))
            lines.append(f"{r.video}: {segs}")
        lines += [f"{r.video}: note: {n}" for n in r.notes]
    lines += [f"missing: {m}" for m in missing]
    return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------ run
def _check_folders(source: str, out_dir: str, paths: Sequence[str]) -> None:
    """The output folder may neither be (in) the input folder nor hold an input video."""
    out = os.path.realpath(out_dir)
    if os.path.isdir(source) and (out + os.sep).startswith(os.path.realpath(source) + os.sep):
        raise UsageError(f"--output {out_dir} is inside --input {source}: its rendered videos would become inputs")
    inside = [p for p in paths if os.path.dirname(os.path.realpath(p)) == out]
    if inside:
        raise UsageError(f"--output {out_dir} holds input videos (e.g. {inside[0]}); use another folder")


def output_names(ids: Sequence[str], render: bool) -> List[str]:
    """Every file predict may write into its folder (with ``render``, two per video)."""
    names = [RUN_FILE] + list(OUTPUT_FILES)
    return names + ([n for i in ids for n in (i + ".mp4", i + "_timeline.png")] if render else [])


def claim_output(out_dir: str, weights: str, paths: Sequence[str]) -> dict:
    """Record which weights and inputs ``out_dir`` holds predictions of (``predict_run.json``);
    refuse (:class:`PredictError`) a folder holding another run's predictions."""
    run = {"weights": weights, "inputs": [os.path.abspath(p) for p in paths]}
    path = os.path.join(out_dir, RUN_FILE)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = {}
        if {k: old.get(k) for k in run} != run:
            raise PredictError(
                f"{out_dir} holds predictions of another run ({RUN_FILE}: weights "
                f"{old.get('weights')!r}, {len(old.get('inputs') or [])} inputs); not overwritten: "
                "use another --output"
            )
    atomic_write_json(path, run)
    return run


def _raise_if_non_finite(results: Sequence[VideoResult], out_dir: str) -> None:
    bad = [r for r in results if r.non_finite]
    if bad:
        raise NonFiniteError(
            f"{len(bad)} of {len(results)} videos had NaN or inf scores (e.g. {bad[0].path}: "
            f"{bad[0].error or bad[0].notes[-1]}); marked non_finite in "
            f"{os.path.join(out_dir, 'predictions.csv')}"
        )


def _load(cfg: Config, checkpoint_path: Optional[str], pretrained: str, trust: bool, model_file: str):
    """``(session, model, weights source, class names the weights bring)``: the checkpoint's PyTorch
    model, or with ``model_file`` the exported one (CPU, float32: no autocast)."""
    if not model_file:
        session = one_process_session(cfg)  # the device decisions (test.mixed_precision)
        model, weights = session.load_model(checkpoint_path, trust=trust, pretrained=pretrained)
        return session, model, weights.source, weights.classes
    if checkpoint_path or pretrained:
        raise UsageError("--model runs an exported file: give no --checkpoint / --pretrained with it")
    loaded = load_onnx_model(model_file, torch.get_num_threads())
    session = dataclasses.replace(one_process_session(apply_record(cfg, loaded.record)), amp=None)
    return session, loaded.model, loaded.source, loaded.record["classes"] or None


def predict_videos(
    cfg: Config,
    source: str,
    out_dir: str,
    checkpoint_path: Optional[str] = None,
    pretrained: str = "",
    top_k: int = 5,
    render: bool = False,
    trust: bool = False,
    model_file: str = "",
) -> Tuple[List[VideoResult], List[str], int]:
    """Predict every video of ``source`` (a video, a folder, or a list/CSV) into ``out_dir``.

    ``model_file``: an ONNX file of tools/export.py instead of the weights, run by onnxruntime on
    the CPU (:mod:`videoattn.apps.exported`); its record sets the clips (frames, sampling rate,
    crop, normalisation) and the classes; views and aggregation are the config's, as for PyTorch.

    Returns ``(results, missing paths, k)``. Undecodable and missing videos are listed, not
    fatal; :class:`PredictError` when not a single video could be predicted, :class:`NonFiniteError`
    when a video's scores held NaN or inf (it is marked ``non_finite``, not predicted), both after
    writing the files.
    """
    if launch_world_size() > 1:
        raise PredictError("predict runs in one process: start it with python, not torchrun")
    if top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}")
    paths, missing = list_inputs(cfg.data, source)
    if not paths and not missing:
        raise UsageError(f"--input {source}: no videos found")
    _check_folders(source, out_dir, paths)
    session, model, source, classes = _load(cfg, checkpoint_path, pretrained, trust, model_file)
    cfg = session.cfg
    names = class_names_for(cfg.data, cfg.model.num_classes, classes)
    k = min(top_k, len(names))
    ids = video_ids(paths)
    claim_outputs(out_dir, "predict", output_names(ids, render), hint="use another --output")
    run = claim_output(out_dir, source, paths)
    results = [VideoResult(video=i, path=p) for i, p in zip(ids, paths)]
    if results:
        score_video_level(session, model, results, names, max(k, min(3, len(names))))
        score_windows(session, model, results, names, max(k, min(3, len(names))))
    for r in results:
        if render and not r.error:
            render_result(out_dir, r)
    run.update(
        num_classes=len(names),
        top_k=k,
        aggregation=cfg.test.aggregation,
        views={"num_ensemble_views": cfg.test.num_ensemble_views, "num_spatial_crops": cfg.test.num_spatial_crops},
    )
    write_outputs(out_dir, results, missing, k, run)
    _raise_if_non_finite(results, out_dir)
    if not any(not r.error for r in results):
        raise PredictError(
            f"none of the {len(results) + len(missing)} videos could be read; reasons in "
            f"{os.path.join(out_dir, 'failed.csv')}"
        )
    return results, missing, k
