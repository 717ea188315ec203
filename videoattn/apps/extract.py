"""Sliding-window feature extraction (what ``tools/extract_features.py`` runs).

Each video is cut into windows, each a test clip of ``data.protocol`` (pyslowfast: ``num_frames``
frames over ``num_frames x sampling_rate`` frames at ``data.target_fps``; see
:mod:`videoattn.data.windows`), every ``features.stride_seconds`` (or ``features.stride_frames`` at
target fps; default: one window length). Each window goes through the protocol's test-time
resize and crops (``features.num_spatial_crops``, optionally averaged) and the model up to
``features.layer`` (:func:`window_features`). Per video (``<id>``: see :func:`video_ids`)::

    DIR/<id>.npy    (num_windows, D) or (num_windows, crops, D) without crop averaging
    DIR/<id>.json   path, fps, duration (decoded and declared), window starts/ends in seconds,
                    frame indices, samples past the end per window, layer, dtype, weights (where the
                    model's weights came from: a checkpoint path or a pretrained name)
    DIR/index.csv   one row per finished video (rank 0, after all ranks finished)
    DIR/failed.csv  videos that could not be decoded this run (and missing ones), with the reason;
                    also videos whose features or scores held NaN or inf (not written; the tool
                    then exits 1)
    DIR/truncated.csv  finished videos cut short: features cover only the frames that decode
    DIR/scores/<id>.npy  with ``features.save_scores``: (num_windows, C) class probabilities of
                    each window (softmax of the classifier in the same forward pass, crops averaged
                    as the features are); DIR/classes.txt names the C columns

A video shorter than one window gets one window whose samples pass its end (the last frame
repeated; mmaction2 wraps around), counted in ``repeated_samples`` in its ``.json``; a video cut
short (it declares more frames than decode) gets only the whole windows of its decodable frames
and a row in ``truncated.csv`` saying how much was lost.

Files are written atomically, the ``.json`` before the ``.npy``: a video is done iff its ``.npy``
exists, so a killed run leaves no partial file and a re-run does only what is missing. A file of
one of these names that extraction did not write is never replaced: the run is refused before it
writes anything (:mod:`videoattn.utils.outputs`).
Under torchrun the videos are sharded across ranks; the files equal a single-process run.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from videoattn.apps.extract_files import (
    INDEX_COLUMNS,
    TRUNCATED_COLUMNS,
    finished_meta,
    index_row,
    output_names,
    remove_stale_temps,
    same_file,
    save_video,
    truncated_row,
)
from videoattn.apps.inputs import list_inputs, video_ids
from videoattn.config import Config, DataConfig, FeaturesConfig
from videoattn.data.transforms import DeviceNormalizer
from videoattn.data.windows import VideoOutputs, WindowChunk, WindowError, WindowStream, per_video
from videoattn.engine.inference import class_names_for
from videoattn.engine.session import open_session
from videoattn.evaluation.metrics import NonFiniteError
from videoattn.models.resnet3d import ResNet3D
from videoattn.utils.distributed import (
    all_gather_object,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
    main_process_claim,
)
from videoattn.utils.io import atomic_write_csv, atomic_write_text

log = logging.getLogger(__name__)

NON_FINITE = "NaN or inf features/scores"  # the failed.csv reason of a video whose outputs are not finite


@dataclass
class RankTally:
    """What one rank reports after its shard (gathered on every rank)."""

    failed: List[Tuple[int, str]]  # (video index, reason), sorted
    written: int  # videos written by this run
    skipped: int  # videos already done by an earlier run


@torch.inference_mode()
def window_features(model: ResNet3D, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``x: (B, 3, T, H, W) -> (B, D)``: the pooled embedding (``layer="pool"``, what the classifier
    sees) or the map after stage ``layer`` (res2..res5) averaged over T, H, W."""
    if layer == "pool":
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return model.forward_intermediates(x, [layer])[layer].mean(dim=(2, 3, 4))


@torch.inference_mode()
def window_features_and_logits(model: ResNet3D, x: torch.Tensor, layer: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: ``x: (B, 3, T, H, W) -> ((B, D) features as :func:`window_features`,
    (B, num_classes) logits)``."""
    maps = model.forward_intermediates(x, sorted({layer, "res5"} - {"pool"}))
    logits = model.forward_head(maps["res5"])
    feats = model.forward_head(maps["res5"], pre_logits=True) if layer == "pool" else maps[layer].mean(dim=(2, 3, 4))
    return feats, logits


def chunk_outputs(
    model: ResNet3D,
    item: WindowChunk,
    layer: str,
    device: torch.device,
    to_device: DeviceNormalizer,
    amp: Optional[torch.dtype] = None,
    scores: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(w, crops, D)`` float32 features of one chunk of windows and, with ``scores``, their
    ``(w, crops, C)`` class probabilities (``amp``: autocast dtype or None)."""
    x = to_device(item.clips, device)
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        if not scores:
            feats = window_features(model, x, layer).float().cpu()
            return feats.reshape(item.num_windows, -1, feats.shape[-1]), None
        feats, logits = window_features_and_logits(model, x, layer)
    probs = logits.float().softmax(dim=1).cpu()
    return (
        feats.float().cpu().reshape(item.num_windows, -1, feats.shape[-1]),
        probs.reshape(item.num_windows, -1, probs.shape[-1]),
    )


def _finish(
    chunks: List[Tuple[torch.Tensor, Optional[torch.Tensor]]], features: FeaturesConfig
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``(features (W, D) or (W, crops, D) in features.dtype, float32 scores alike or None)``."""
    feats = torch.cat([c[0] for c in chunks])  # (W, crops, D)
    scores = torch.cat([c[1] for c in chunks]) if chunks[0][1] is not None else None
    if features.average_crops:
        feats = feats.mean(dim=1)
        scores = scores.mean(dim=1) if scores is not None else None
    feats = feats.numpy().astype(np.float16 if features.dtype == "float16" else np.float32)
    return feats, (scores.numpy().astype(np.float32) if scores is not None else None)


def window_loader(
    videos: Sequence[Tuple[int, str]],
    data: DataConfig,
    features: FeaturesConfig,
    device: torch.device = torch.device("cpu"),
) -> DataLoader:
    """Chunks of decoded windows (:class:`WindowStream`), decoded by ``data.num_workers`` workers
    (in pinned memory when ``device`` is CUDA and ``data.pin_memory``)."""
    workers = min(data.num_workers, len(videos))
    extra = dict(prefetch_factor=data.prefetch_factor) if workers > 0 else {}
    return DataLoader(
        WindowStream(videos, data, features),
        batch_size=None,
        num_workers=workers,
        pin_memory=data.pin_memory and device.type == "cuda",
        **extra,
    )


def extract_features(
    cfg: Config,
    source: str,
    out_dir: str,
    checkpoint_path: Optional[str] = None,
    random_init: bool = False,
    trust: bool = False,
    pretrained: str = "",
) -> Optional[Dict[str, object]]:
    """Extract features of every video of ``source`` into ``out_dir``; summary on rank 0, else None.

    Weights: see :func:`videoattn.engine.inference.resolve_weights` (``pretrained``: public weights by
    name; ``random_init``: none, benchmarks only; ``trust``: allow a checkpoint that needs full
    unpickling, ``--trust-checkpoint``).
    """
    session = open_session(cfg)  # the process group, the device decisions (test.mixed_precision)
    cfg, info = session.cfg, session.info
    model, weights = session.load_model(checkpoint_path, random_init, trust, pretrained)  # bad checkpoint: fail first
    paths, missing = list_inputs(cfg.data, source)
    ids = video_ids(paths)
    os.makedirs(out_dir, exist_ok=True)
    f = cfg.features
    main_process_claim(out_dir, "extract_features", output_names(ids, f.save_scores))
    if f.save_scores and is_main_process():
        names = class_names_for(cfg.data, cfg.model.num_classes, weights.classes)
        atomic_write_text(os.path.join(out_dir, "classes.txt"), "".join(n + "\n" for n in names))
    todo, skipped, failed = _plan(out_dir, ids, paths, f.save_scores)
    bar = tqdm(
        total=len(todo),
        desc="features",
        unit="video",
        dynamic_ncols=True,
        disable=not (is_main_process() and sys.stderr.isatty()),
    )
    videos = per_video(
        window_loader(todo, cfg.data, f, info.device) if todo else [],
        lambda c: chunk_outputs(model, c, f.layer, info.device, session.normalize, session.amp, f.save_scores),
    )
    written = 0
    for got in videos:
        written += _write_video(got, out_dir, ids, paths, f, failed, weights.source)
        bar.update(1)
    bar.close()
    gathered = all_gather_object(RankTally(sorted(failed.items()), written, skipped))
    summary = _report(out_dir, ids, paths, missing, gathered) if is_main_process() else None
    barrier()
    _raise_if_non_finite(gathered, out_dir)
    return summary


def _write_video(
    got: Union[VideoOutputs, WindowError],
    out_dir: str,
    ids: List[str],
    paths: List[str],
    f: FeaturesConfig,
    failed: Dict[int, str],
    weights: str = "",
) -> int:
    """Write one video's files from :func:`per_video`'s ``got`` (1), or record in ``failed`` why
    not (0): it could not be decoded, or its outputs are not finite."""
    k = got.k
    if isinstance(got, WindowError):
        log.warning("features: skipping %s: %s", paths[k], got.error)
        failed[k] = got.error
        return 0
    feats, scores = _finish(got.outputs, f)
    assert feats.shape[0] == len(got.window.starts), (paths[k], feats.shape)
    if _non_finite_reason(feats, scores):
        failed[k] = _non_finite_reason(feats, scores)
        log.warning("features: not writing %s: %s", paths[k], failed[k])
        return 0
    save_video(out_dir, ids[k], paths[k], got.window, got.declared_frames, feats, f, scores, weights)
    return 1


def _non_finite_reason(feats: np.ndarray, scores: Optional[np.ndarray]) -> str:
    """Why a video's outputs are not written ("" if all are finite): the windows whose features
    (in ``features.dtype``) or class scores hold NaN or inf."""
    bad = ~np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
    if scores is not None:
        bad |= ~np.isfinite(scores.reshape(len(scores), -1)).all(axis=1)
    return f"{NON_FINITE} in {int(bad.sum())} of {len(bad)} windows: not written" if bad.any() else ""


def _raise_if_non_finite(gathered: List[RankTally], out_dir: str) -> None:
    """:class:`NonFiniteError` on every rank if any video's outputs held NaN or inf (they are in failed.csv)."""
    bad = [reason for g in gathered for _, reason in g.failed if reason.startswith(NON_FINITE)]
    if bad:
        raise NonFiniteError(
            f"{len(bad)} videos had NaN or inf features or scores ({bad[0]}): listed in "
            f"{os.path.join(out_dir, 'failed.csv')}, no features written for them"
        )


def _plan(
    out_dir: str, ids: List[str], paths: List[str], need_scores: bool = False
) -> Tuple[List[Tuple[int, str]], int, Dict[int, str]]:
    """This rank's shard: ``(videos to do, count already done, {k: reason} refused)``. Finished
    files of another input under the same name (an earlier run) are never overwritten; a video
    finished without the scores ``need_scores`` asks for is done again."""
    todo, skipped, refused = [], 0, {}
    for k in range(get_rank(), len(paths), get_world_size()):
        remove_stale_temps(out_dir, ids[k])
        meta = finished_meta(out_dir, ids[k])
        if (
            meta is not None
            and same_file(meta.get("path", ""), paths[k])
            and need_scores
            and finished_meta(out_dir, ids[k], need_scores) is None
        ):
            meta = None  # same video, scores not yet written: do it again
        if meta is None:
            todo.append((k, paths[k]))
        elif same_file(meta.get("path", ""), paths[k]):
            skipped += 1
        else:
            refused[k] = (
                f"output name {ids[k]!r} already holds the features of {meta.get('path')} "
                f"(another input); not overwritten: use another --output"
            )
            log.warning("features: %s: %s", paths[k], refused[k])
    return todo, skipped, refused


def _report(
    out_dir: str, ids: List[str], paths: List[str], missing: List[str], gathered: List[RankTally]
) -> Dict[str, object]:
    """Rank 0: ``index.csv``, ``failed.csv``, ``truncated.csv`` and the summary (one log line)."""
    all_failed = sorted(f for g in gathered for f in g.failed)
    failed_set = {k for k, _ in all_failed}
    rows, short = [], []
    for k, vid in enumerate(ids):
        meta = None if k in failed_set else finished_meta(out_dir, vid)
        if meta is not None:
            rows.append(index_row(meta))
            short += [r for r in [truncated_row(meta)] if r]
    atomic_write_csv(os.path.join(out_dir, "index.csv"), INDEX_COLUMNS, rows)
    atomic_write_csv(os.path.join(out_dir, "truncated.csv"), TRUNCATED_COLUMNS, short)
    fail_rows = [[ids[k], paths[k], reason] for k, reason in all_failed] + [
        ["", m, "missing: file not found"] for m in missing
    ]
    atomic_write_csv(os.path.join(out_dir, "failed.csv"), ["video", "path", "reason"], fail_rows)
    summary = {
        "num_videos": len(paths) + len(missing),
        "num_done": len(rows),
        "num_written": sum(g.written for g in gathered),
        "num_skipped_done": sum(g.skipped for g in gathered),
        "num_failed": len(all_failed),
        "num_missing": len(missing),
        "num_truncated": len(short),
        "failed": fail_rows,
        "output": out_dir,
    }
    log.info(
        "features: %d of %d videos done (%d written now, %d already there), %d failed, %d missing%s -> %s",
        len(rows),
        summary["num_videos"],
        summary["num_written"],
        summary["num_skipped_done"],
        len(all_failed),
        len(missing),
        f"; {len(short)} cut short (features of the frames that decode: truncated.csv)" if short else "",
        out_dir,
    )
    return summary
